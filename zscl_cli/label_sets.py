"""``zscl label-set``: list, show, put and delete named label sets (classify by name)."""

from __future__ import annotations

import json

from . import http
from .tables import print_table

__all__ = ["add_label_set"]


def cmd_list(args) -> int:
    """``zscl label-set list``: a table of the label sets, or how to create the first."""
    rows = [(s["name"], len(s["classnames"]), "yes" if s.get("keep_images") else "no",
             "on" if s.get("auto_update") else "off", s.get("source"))
            for s in http.call(args, "GET", "/v1/label-sets").json()]
    print_table(("NAME", "LABELS", "KEEPS IMAGES", "AUTO-UPDATE", "SOURCE"), rows, right={"LABELS"},
                empty="no label sets yet: create one with `zscl label-set put <name> --labels "
                      "cat,dog,car`, then classify with `zscl classify --label-set <name>`")
    return 0


def cmd_show(args) -> int:
    """``zscl label-set show``: one label set, as the server's JSON."""
    body = http.call(args, "GET", f"/v1/label-sets/{args.name}").json()
    print(json.dumps(body, indent=2))
    return 0


def cmd_put(args) -> int:
    """``zscl label-set put``: create or replace a label set from --labels and --labels-file."""
    labels = [s.strip() for s in args.labels.split(",") if s.strip()]
    if args.labels_file:
        labels += [line.strip() for line in open(args.labels_file, encoding="utf-8") if line.strip()]
    body = {"classnames": labels, "templates": args.template or None, "source": args.source}
    saved = http.call(args, "PUT", f"/v1/label-sets/{args.name}", json=body).json()
    print(f"label set {saved['name']}: {len(saved['classnames'])} labels (its head is built)")
    return 0


def cmd_delete(args) -> int:
    """``zscl label-set delete``: delete a label set on the server."""
    http.call(args, "DELETE", f"/v1/label-sets/{args.name}")
    print(f"label set {args.name} deleted")
    return 0


def add_label_set(subparsers) -> None:
    """Register ``zscl label-set`` and its subcommands on the ``zscl`` parser."""
    p = subparsers.add_parser("label-set", help="list, show, put or delete named label sets")
    sub = p.add_subparsers(dest="label_set_command", required=True)
    sub.add_parser("list", help="every label set").set_defaults(func=cmd_list)
    show = sub.add_parser("show", help="one label set as JSON")
    show.set_defaults(func=cmd_show)
    put = sub.add_parser("put", help="create or replace a label set (admin key)")
    put.add_argument("--labels", default="", help="comma-separated labels, e.g. cat,dog,car")
    put.add_argument("--labels-file", help="one label per line (added to --labels)")
    put.add_argument("--template", action="append", metavar="TEMPLATE",
                     help="a prompt template with one {} (repeatable; default: the service's)")
    put.add_argument("--source", help="who made it")
    put.set_defaults(func=cmd_put)
    delete = sub.add_parser("delete", help="delete a label set (admin key)")
    delete.set_defaults(func=cmd_delete)
    for command in (show, put, delete):
        command.add_argument("name", help="the label set's name")
    for command in sub.choices.values():
        http.client_args(command)
