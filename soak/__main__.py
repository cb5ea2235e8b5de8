from soak.cli import main

raise SystemExit(main())
