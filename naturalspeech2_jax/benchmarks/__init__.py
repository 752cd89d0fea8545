"""Speed benchmarks and research probes: not imported by ``train/`` or the models."""


def print_and_save(report: dict, out: str | None) -> None:
    """Print a benchmark's JSON report and, when ``out`` is given, write it there too."""
    import json
    import os

    text = json.dumps(report, indent=1)
    print(text)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            f.write(text + "\n")
