"""``zscl dataset``: upload, list, show and delete labelled datasets."""

from __future__ import annotations

from pathlib import Path

from . import http
from .tables import print_table

__all__ = ["add_dataset"]

_CONTENT_TYPES = {".zip": "application/zip", ".tar": "application/x-tar",
                  ".gz": "application/gzip", ".tgz": "application/gzip"}


def _line(d: dict) -> str:
    return (f"{d['id']}  {d['name']:<20} classes={len(d['classnames'])} train={d['n_train']} "
            f"test={d['n_test']} eval={d['n_eval']}{'  [suite]' if d['is_suite'] else ''}")


def cmd_dataset_upload(args) -> int:
    """``zscl dataset upload``: send an archive to the server as a dataset and say what it stored."""
    path = Path(args.archive)
    content_type = _CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
    params = {"name": args.name or path.name.split(".")[0], "suite": str(args.suite).lower(),
              "test_fraction": args.test_fraction, "seed": args.seed}
    with path.open("rb") as fh:
        body = http.call(args, "POST", "/v1/datasets", content=fh, params=params,
                         headers={"Content-Type": content_type}).json()
    print(f"dataset {body['id']} '{body['name']}': {len(body['classnames'])} classes, "
          f"{body['n_train']} train / {body['n_test']} test ({body['split']} split)"
          f"{', zero-shot suite' if body['is_suite'] else ''}")
    return 0


def cmd_dataset_list(args) -> int:
    """``zscl dataset list``: a table of the datasets, or how to upload the first."""
    rows = [(d["id"], d["name"], len(d["classnames"]), d["n_train"], d["n_test"], d["n_eval"],
             "yes" if d["is_suite"] else "no") for d in http.call(args, "GET", "/v1/datasets").json()]
    print_table(("ID", "NAME", "CLASSES", "TRAIN", "TEST", "EVAL", "SUITE"), rows,
                right={"CLASSES", "TRAIN", "TEST", "EVAL"},
                empty="no datasets yet: add one with `zscl dataset upload <archive.zip> --name "
                      "<name>` (a zip or tar of <class>/<image> folders)")
    return 0


def cmd_dataset_show(args) -> int:
    """``zscl dataset show``: one dataset's checksum, split and classes."""
    d = http.call(args, "GET", f"/v1/datasets/{args.dataset}").json()
    print(_line(d))
    print(f"  sha256 {d['sha256']}, {d['split']} split, created {d['created_at']}")
    print(f"  classes: {', '.join(d['classnames'])}")
    return 0


def cmd_dataset_delete(args) -> int:
    """``zscl dataset delete``: delete a dataset on the server."""
    http.call(args, "DELETE", f"/v1/datasets/{args.dataset}")
    print(f"dataset {args.dataset} deleted")
    return 0


def add_dataset(subparsers) -> None:
    """Register ``zscl dataset`` and its subcommands on the ``zscl`` parser."""
    p = subparsers.add_parser("dataset", help="upload, list, show or delete labelled datasets")
    sub = p.add_subparsers(dest="dataset_command", required=True)
    up = sub.add_parser("upload", help="upload a zip/tar of <class>/<image> (admin key)")
    up.add_argument("archive", help="a .zip, .tar or .tar.gz of <class>/<image> folders (or "
                                    "train/<class>/ and test/<class>/, or a manifest)")
    up.add_argument("--name", help="default: the file name")
    up.add_argument("--suite", action="store_true", help="register as a zero-shot evaluation suite")
    up.add_argument("--test-fraction", type=float, default=0.2,
                    help="of each class, held out as the test split the gate scores, when the "
                         "archive has no train/ and test/ folders (0.2)")
    up.add_argument("--seed", type=int, default=0,
                    help="the seed of that split: the same seed and images, the same split (0)")
    up.set_defaults(func=cmd_dataset_upload)
    sub.add_parser("list", help="every dataset").set_defaults(func=cmd_dataset_list)
    show = sub.add_parser("show", help="one dataset, with its classes and their sizes")
    show.set_defaults(func=cmd_dataset_show)
    delete = sub.add_parser("delete", help="delete a dataset no job uses (admin key)")
    delete.set_defaults(func=cmd_dataset_delete)
    for command in (show, delete):
        command.add_argument("dataset", help="dataset id")
    for command in sub.choices.values():
        http.client_args(command)
