"""Package `propensity` from libs/; pins come from requirements.txt, verbs from libs/propensity/verbs.py."""

import runpy
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
# The one list of verbs; the module imports nothing, so it is read without the package's dependencies.
JOB_VERBS = runpy.run_path(str(HERE / "libs" / "propensity" / "verbs.py"))["JOB_VERBS"]


def _requirements() -> list[str]:
    lines = (HERE / "requirements.txt").read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


setup(
    name="propensity",
    version="0.1.0",
    description="Cross-platform purchase, click and churn propensity on Spark, Delta Lake and MLflow",
    python_requires=">=3.11,<3.12",
    package_dir={"": "libs"},
    packages=find_packages("libs"),
    package_data={"propensity": ["resources/*"]},
    install_requires=_requirements(),
    extras_require={"dev": ["pytest>=8", "pytest-xdist>=3.5", "ruff>=0.6", "mypy>=1.10", "types-PyYAML"]},
    entry_points={
        "console_scripts": [
            "propensity=propensity.cli:main",
            # One entry point per stage for Databricks python_wheel_task.
            *[f"propensity-{verb}=propensity.cli:{verb}_entry" for verb in JOB_VERBS],
        ]
    },
)
