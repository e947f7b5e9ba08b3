"""The report: a run's figures (``run``'s result) as text tables."""

from __future__ import annotations


def _num(value: float | None, width: int, digits: int = 1) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:{width},.{digits}f}"


def format_report(result: dict) -> str:
    """The run as text: a header, one table per (request size, concurrency), the timings."""
    c = result["config"]
    litserve = (f"LitServe: workers_per_device {c['litserve_workers']}, fast_queue "
                f"{c['litserve_fast_queue']}, torch threads {c['litserve_threads']}"
                if c["litserve"] else "LitServe: skipped")
    lines = [(f"model {c['model']} ({c['image_size']} px) on {c['device']} ({c['device_name']}); "
              f"served {c['served_dtype']}, raw forward {c['raw_dtype']}; max batch {c['batch']}, "
              f"wait {c['wait_ms']:g} ms"),
             (f"service: {c['api_processes']} HTTP process(es), queue max {c['queue_max']}; "
              f"torch threads {c['threads'] or 'default'}; {litserve}; malloc tuned {c['tune_malloc']}"),
             (f"client: {c['client_procs']} process(es); images: {c['images']}; {c['seconds']:g} s "
              f"per measurement in {c['rounds']} round(s); {c['cpus']} CPUs; torch {c['torch']}; "
              f"idle server paused {c['pause_idle']}"), ""]
    for group in result["levels"]:
        lines += [*_group_table(group, c["batch"]), ""]
    if result.get("big_labels"):
        big = result["big_labels"]
        lines += [(f"{big['labels']}-label request to the service (1 image, 1 template): head "
                   f"cache miss {big['miss_ms']:.1f} ms, hit {big['hit_ms']:.1f} ms"), ""]
    if result.get("timings_s"):
        lines.append("time taken:")
        lines += [f"  {name:<58}{s:7.1f} s" for name, s in result["timings_s"].items()]
        lines.append(f"  {'total':<58}{sum(result['timings_s'].values()):7.1f} s")
    return "\n".join(lines)


_COLUMNS = (("img/s", 10, 1), ("req/s", 10, 1), ("p50 ms", 9, 1), ("p99 ms", 9, 1),
            ("mean batch", 12, 1), ("faults/img", 12, 0), ("CPU ms/img", 12, 2), ("errors", 8, 0))


def _group_table(group: dict, batch: int) -> list[str]:
    ceiling = group["client_ceiling"]
    title = (f"{group['images_per_request']} image(s) per request, concurrency {group['concurrency']}; "
             f"client ceiling {group['client_ceiling_rps']:,.0f} req/s on /livez "
             f"(p50 {_num(ceiling['p50_ms'], 0, 2)} ms, errors {ceiling['errors']})")
    lines = [title, "  " + " " * 24 + "".join(f"{name:>{width}}" for name, width, _ in _COLUMNS)]
    names = {"service": "service /v1/classify", "raw": f"raw forward, batch {batch}",
             "litserve": "LitServe /v1/classify"}
    for name, label in names.items():
        row = group.get(name)
        if row is None:
            continue
        values = (row["img_s"], None if name == "raw" else row["req_s"], row["p50_ms"],
                  row["p99_ms"], row["mean_batch"], row["faults_per_image"],
                  row.get("cpu_ms_per_image"))
        cells = "".join(_num(v, width, digits) for v, (_, width, digits) in zip(values, _COLUMNS))
        lines.append(f"  {label:<24}{cells}{row['errors']:8d}")
    ratios = "   ".join(f"service/{peer} {group[key]:.2f}" for peer, key in (
        ("raw", "service_over_raw"), ("LitServe", "service_over_litserve")) if group[key] is not None)
    used = group["service"]["req_s"] / ceiling["req_s"] * 100 if ceiling["req_s"] else None
    lines.append(f"  ratios (img/s): {ratios};   service req/s = {_num(used, 0, 0)}% of the client ceiling")
    return lines
