"""`python -m bioxen_flows` is the same as `bioxen`."""

from bioxen_flows.cli import run

# guarded: worker processes (spawn) re-import the main module and must not run the CLI
if __name__ == "__main__":
    run()
