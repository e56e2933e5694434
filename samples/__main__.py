"""python -m samples: load sample studies into the local PACS (Orthanc) and FHIR server.

python -m samples --list
python -m samples load head-bleed [--slices N --size N --seed N] [--no-fhir | --pacs-only]
python -m samples load-real
python -m samples demo [--seed N --slices N --size N]   (needs the running mesh: make demo)
"""

from __future__ import annotations

import argparse
import sys

import requests

from samples import demo
from samples.demo import DEMO_SCENARIOS
from samples.dicomweb import StowError
from samples.load import REAL_FILES, SCENARIOS, Settings, load_real, load_study


def _print(line: str) -> None:
    print(line, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m samples", description=__doc__.split("\n")[0])
    parser.add_argument("--list", action="store_true", help="list the sample scenarios")
    sub = parser.add_subparsers(dest="command")
    load = sub.add_parser("load", help="generate a synthetic study and load it (PACS + EHR)")
    load.add_argument("scenario", choices=sorted(SCENARIOS))
    load.add_argument("--slices", type=int, default=32, help="number of slices (default 32)")
    load.add_argument("--size", type=int, default=256, help="rows = columns (default 256)")
    load.add_argument("--seed", type=int, default=1, help="seed of the phantom and identifiers")
    load.add_argument("--batch", type=int, default=24, help="instances per STOW-RS request")
    arrival = load.add_mutually_exclusive_group()
    arrival.add_argument("--no-fhir", action="store_true", help="store the images only")
    arrival.add_argument(
        "--pacs-only",
        action="store_true",
        help="images, and the order on the FHIR server, but no ImagingStudy (no DICOM-FHIR sync)",
    )
    sub.add_parser("load-real", help="store the real CT/MR files shipped by pydicom(-data)")
    demo = sub.add_parser(
        "demo", help="load three studies into a running mesh and show the results"
    )
    demo.add_argument("--seed", type=int, default=None, help="default: a new seed per run")
    demo.add_argument("--slices", type=int, default=32)
    demo.add_argument("--size", type=int, default=256)
    demo.add_argument(
        "--scenarios",
        default=",".join(DEMO_SCENARIOS),
        help="comma-separated (default: %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings.from_env()
    if args.list or args.command is None:
        for name, scenario in sorted(SCENARIOS.items()):
            print(f"{name:15s} {scenario.description}")
        print(f"{'load-real':15s} {len(REAL_FILES)} real CT/MR files shipped by pydicom(-data)")
        return 0
    if args.command == "demo":
        return demo.main(
            seed=args.seed,
            slices=args.slices,
            size=args.size,
            scenarios=tuple(name.strip() for name in args.scenarios.split(",") if name.strip()),
        )
    try:
        if args.command == "load":
            result = load_study(
                args.scenario,
                settings=settings,
                seed=args.seed,
                slices=args.slices,
                size=args.size,
                batch_size=args.batch,
                with_fhir=not args.no_fhir,
                with_imaging_study=not args.pacs_only,
                out=_print,
            )
            print(f"StudyInstanceUID {result.study_instance_uid}")
            print(f"ImagingStudy {result.imaging_study_id or '(none on the FHIR server)'}")
            return 0
        results = load_real(settings=settings, out=_print)
        failed = [r for r in results if r.error]
        print(f"real files: {len(results) - len(failed)} stored, {len(failed)} failed")
        return 1 if failed or not results else 0
    except (StowError, RuntimeError, requests.RequestException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
