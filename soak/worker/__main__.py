from soak.worker.main import main

raise SystemExit(main())
