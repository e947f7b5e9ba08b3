"""``zscl feedback``: answer kept predictions, see the answers and live accuracy, build a
dataset from them (the feedback loop, docs/updates.md)."""

from __future__ import annotations

from . import http

__all__ = ["add_feedback"]


def cmd_send(args) -> int:
    """Send the true label of one kept prediction."""
    body = http.call(args, "POST", "/v1/feedback",
                     json={"prediction_id": args.prediction_id, "label": args.label}).json()
    verdict = "confirmed" if body["correct"] else f"corrected (it said {body['predicted']!r})"
    print(f"prediction {body['prediction_id']}: {body['label']!r} {verdict}, "
          f"version {body['model_version']}")
    job = body.get("auto_update_job")
    if job:
        print(f"label set {body['label_set']}: its auto-update policy started job {job['id']} "
              f"(`zscl job watch {job['id']}`)")
    return 0


def cmd_list(args) -> int:
    """Counts per label, live accuracy per version, and the newest answers."""
    params = {"limit": args.limit, **({"label_set": args.label_set} if args.label_set else {})}
    body = http.call(args, "GET", "/v1/feedback", params=params).json()
    summary = body["summary"]
    if not summary["items"]:
        scope = f" for label set {args.label_set}" if args.label_set else ""
        print(f"no feedback yet{scope}: classify with `zscl classify --keep` (or a label set with "
              f"keep_images) to get prediction ids, then answer them with "
              f"`zscl feedback send <prediction id> <label>`")
        return 0
    print(f"{summary['items']} answers: {summary['confirmed']} confirmed, "
          f"{summary['corrected']} corrected, {summary['new']} not yet in a dataset")
    print(f"\n{'version':<40} {'answers':>8} {'live accuracy':>14}")
    for version, score in summary["versions"].items():
        print(f"{version:<40} {score['items']:>8} {score['accuracy']:>13.1%}")
    print(f"\n{'label':<24} {'confirmed':>10} {'corrected':>10} {'new':>6}")
    for label, counts in summary["per_label"].items():
        print(f"{label:<24} {counts['confirmed']:>10} {counts['corrected']:>10} {counts['new']:>6}")
    print(f"\n{'prediction':<34} {'said':<20} {'truth':<20} version")
    for item in body["items"]:
        print(f"{item['prediction_id']:<34} {item['predicted'][:19]:<20} {item['label'][:19]:<20} "
              f"{item['model_version']}")
    return 0


def cmd_dataset(args) -> int:
    """Build a dataset from a label set's answers."""
    body = http.call(args, "POST", "/v1/datasets/from-feedback", json={
        "label_set": args.label_set, "min_per_class": args.min_per_class,
        "test_fraction": args.test_fraction, "seed": args.seed}).json()
    state = "built" if body["created"] else "already built from these answers"
    print(f"dataset {body['id']} ({body['name']}) {state}: {body['items']} images, "
          f"{len(body['classnames'])} classes, {body['n_train']} train / {body['n_test']} test")
    if body["skipped_labels"]:
        print(f"left out (a class name cannot hold them): {', '.join(body['skipped_labels'])}")
    print(f"train on it: zscl job create {body['id']} --watch")
    return 0


def add_feedback(subparsers) -> None:
    """Register ``zscl feedback send|list|dataset``."""
    p = subparsers.add_parser("feedback", help="answer kept predictions; datasets from answers")
    sub = p.add_subparsers(dest="feedback_command", required=True)
    send = sub.add_parser("send", help="the true label of a kept prediction (inference key)")
    send.add_argument("prediction_id", help="from a classify answer that kept its image")
    send.add_argument("label", help="one of the prediction's labels")
    send.set_defaults(func=cmd_send)
    listing = sub.add_parser("list", help="answers, counts per label, live accuracy per version")
    listing.add_argument("--label-set", help="only this label set's answers")
    listing.add_argument("--limit", type=int, default=20, help="newest answers to show (20)")
    listing.set_defaults(func=cmd_list)
    dataset = sub.add_parser("dataset", help="build a dataset from a label set's answers "
                                             "(admin key)")
    dataset.add_argument("label_set", help="whose answers")
    dataset.add_argument("--min-per-class", type=int, default=1,
                         help="leave out classes with fewer answered images (1)")
    dataset.add_argument("--test-fraction", type=float, default=0.2,
                         help="of each class, held out for the gate (0.2)")
    dataset.add_argument("--seed", type=int, default=0, help="the split's seed (0)")
    dataset.set_defaults(func=cmd_dataset)
    for command in sub.choices.values():
        http.client_args(command)
