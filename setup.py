"""Package `propensity` from libs/; pins come from requirements.txt (the one place they live)."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def _requirements() -> list[str]:
    lines = (HERE / "requirements.txt").read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


STAGES = ["generate", "ingest", "features", "pretrain", "finetune", "distill", "evaluate", "score", "publish",
          "sql"]

setup(
    name="propensity",
    version="0.1.0",
    description="Cross-platform purchase, click and churn propensity on Spark, Delta Lake and MLflow",
    python_requires=">=3.11,<3.12",
    package_dir={"": "libs"},
    packages=find_packages("libs"),
    package_data={"propensity": ["resources/*"]},
    install_requires=_requirements(),
    extras_require={"dev": ["pytest>=8", "ruff>=0.6", "mypy>=1.10", "types-PyYAML"]},
    entry_points={
        "console_scripts": [
            "propensity=propensity.cli:main",
            # One entry point per stage for Databricks python_wheel_task.
            *[f"propensity-{stage}=propensity.cli:{stage}_entry" for stage in STAGES],
        ]
    },
)
