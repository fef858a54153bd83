"""`bioxen genome import`: a GenBank file's genes, summarised and optionally attached to
a VM (with an essentiality table)."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

from bioxen_flows.cli import completion, output
from bioxen_flows.cli.commands import Commands


def register(commands: Commands) -> None:
    gimport = commands.group("genome", "genome annotations", ("import",)).add(
        "import", cmd_genome_import,
        "load a GenBank file and summarise it (optionally attach it to a VM)",
        description="load a GenBank file (first record) and summarise its genes", json=False)
    gimport.add_argument("file", type=Path, metavar="FILE.gb")
    gimport.add_argument("--essentiality", type=Path, metavar="CSV",
                         help="locus_tag,essentiality table (e.g. Breuer et al. 2019)")
    gimport.add_argument("--vm", metavar="VM_ID",
                         help="attach the genome to this VM").completer = completion.vm_ids  # type: ignore[attr-defined]
    gimport.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_genome_import(args: argparse.Namespace) -> int:
    """Summarise a GenBank file; with --vm, attach it (and --essentiality) to that VM."""
    from bioxen_flows.organisms.genome import load_essentiality_csv, load_genbank

    genome = load_genbank(args.file)
    summary: dict[str, Any] = {**genome.summary(), "description": genome.description,
                               "file": str(args.file.resolve())}
    if args.essentiality is not None:
        genome = genome.with_essentiality(load_essentiality_csv(args.essentiality))
        summary["essentiality"] = dict(Counter(genome.essentiality.values()))
    if args.vm is not None:
        from bioxen_flows.vm import load_bio_vm

        essentiality = str(args.essentiality.resolve()) if args.essentiality else None
        load_bio_vm(args.vm).attach_genome(str(args.file.resolve()), essentiality)
        summary["attached_to"] = args.vm
    if args.json:
        output.print_json(summary)
        return 0
    rows = [
        ("accession", summary["accession"]),
        ("description", summary["description"]),
        ("length", f"{output.number(summary['length_bp'])} bp"),
        ("protein-coding genes", summary["protein_coding"]),
        ("RNA genes", summary["rna"]),
        ("pseudogenes", summary["pseudogenes"]),
        ("genes in total", summary["total_genes"]),
    ]
    if "essentiality" in summary:
        rows.append(("essentiality", ", ".join(
            f"{k} {v}" for k, v in sorted(summary["essentiality"].items()))))
    if args.vm is not None:
        rows.append(("attached to VM", args.vm))
    output.console().print(output.key_values(str(args.file), rows))
    return 0
