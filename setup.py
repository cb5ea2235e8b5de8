"""Only the package list lives here: pyproject.toml can't add the packages mapped from
outside soak/ (fault_catalog/, native/; see [tool.setuptools.package-dir]) to a discovered list."""

from setuptools import find_namespace_packages, setup

setup(packages=find_namespace_packages(include=["soak", "soak.*"]) + ["soak.fault_catalog", "soak.native"])
