"""`bioxen export`: a VM's whole model as SBML or Antimony, for other simulators."""

from __future__ import annotations

import argparse
import sys


def cmd_export(args: argparse.Namespace) -> int:
    """Write the VM's model (host, packages, caps, current state as initial values)."""
    from bioxen_flows.cli.validate import check_output_file
    from bioxen_flows.engine.export import export_model
    from bioxen_flows.output_files import atomic_output
    from bioxen_flows.vm import load_bio_vm

    # before any model is built
    target = None if args.output is None else check_output_file(args.output)

    snapshot = load_bio_vm(args.vm_id).snapshot_state()["cell"]
    text = export_model(snapshot, args.format)
    if target is None:
        sys.stdout.write(text)
    else:
        with atomic_output(target, what="--output") as out:  # never half a file
            out.write(text.encode("utf-8"))
        print(f"wrote {args.output} ({args.format}, simulated minute "
              f"{float(snapshot['time']):g} is its time 0)")
    return 0
