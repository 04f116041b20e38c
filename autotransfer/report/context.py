"""Run-directory files -> one plain dict the report template renders.

Only the plain files listed in docs/ARCHITECTURE.md ("Run directory") are read, so a report can be
re-rendered later from the directory alone. Every file is optional: a missing or unreadable one
leaves its key ``None`` and the stage it belongs to is listed as not run.
"""
from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from autotransfer.report.savedmodel import read_signatures
from autotransfer.evaluate.verdicts import loss_reasons

# Leaderboard columns in display order; unknown columns keep their file order after these.
LEADERBOARD_COLUMNS = [
    "rank", "name", "handle", "input_size", "params", "feature_dim", "score", "std", "scorer",
    "val_accuracy", "test_accuracy", "test_macro_f1", "feature_seconds", "score_seconds", "cached", "status",
]
TRIAL_COLUMNS = [
    "trial_id", "backbone", "unfreeze_blocks", "learning_rate", "patience", "dropout",
    "val_accuracy", "epochs", "seconds", "status",
]
# (stage, files whose presence means it ran); export is a directory.
STAGES: list[tuple[str, list[str]]] = [
    ("data", ["data.json"]),
    ("probe", ["leaderboard.csv"]),
    ("tune", ["trials.csv", "best.json"]),
    ("evaluate", ["test_metrics.json"]),
    ("export", ["export/"]),
]
DEFAULT_MODEL_NAME = "model"


def _clean(value: Any) -> Any:
    """NaN/inf -> None and numpy scalars -> Python, recursively, so templates test ``is none`` only."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (ValueError, TypeError):
            pass
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _read_json(path: Path, warnings: list[str]) -> Any:
    if not path.is_file():
        return None
    try:
        return _clean(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        warnings.append(f"{path.name} could not be read ({exc}); its section is left out.")
        return None


def _read_csv(path: Path, warnings: list[str]) -> tuple[list[dict[str, Any]], list[str]] | None:
    if not path.is_file():
        return None
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return [], []
    except (OSError, ValueError) as exc:
        warnings.append(f"{path.name} could not be read ({exc}); its section is left out.")
        return None
    rows = [_clean(r) for r in df.astype(object).to_dict("records")]
    return rows, [str(c) for c in df.columns]


def _order_columns(present: list[str], preferred: list[str]) -> list[str]:
    """Preferred columns first, then extra scorer columns ``score_*``, then anything else."""
    head = [c for c in preferred if c in present]
    scorers = [c for c in present if c.startswith("score_") and c not in head]
    rest = [c for c in present if c not in head and c not in scorers]
    return head + scorers + rest


def _find_key(obj: Any, key: str) -> Any:
    """First value under ``key`` anywhere in a nested dict (config layouts vary by api version)."""
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        for v in obj.values():
            found = _find_key(v, key)
            if found is not None:
                return found
    return None


def _version_key(p: Path) -> tuple[int, int | str]:
    return (1, int(p.name)) if p.name.isdigit() else (0, p.name)


def _export_modality(version_dir: Path) -> str:
    meta = version_dir / "autotransfer_export.json"
    try:
        return str(json.loads(meta.read_text(encoding="utf-8")).get("modality", "image"))
    except (OSError, ValueError, AttributeError):
        return "image"


def _export_paths(model_dir: Path, version_dir: Path, versions: list[Path], signatures: Any, labels: Any) -> dict:
    source = model_dir.resolve().as_posix()
    model = model_dir.name
    return {
        "model_name": model, "version": version_dir.name, "path": version_dir.resolve().as_posix(),
        "model_base_path": source, "versions": [p.name for p in versions], "signatures": signatures,
        "signature_names_known": signatures is not None, "labels": labels,
        "has_warmup": (version_dir / "assets.extra" / "tf_serving_warmup_requests").is_file(),
        "docker_command": ("docker run --rm -p 8501:8501 -p 8500:8500 \\\n"
                           f"  --mount type=bind,source={source},target=/models/{model} \\\n"
                           f"  -e MODEL_NAME={model} tensorflow/serving"),
        "status_command": f"curl -s localhost:8501/v1/models/{model}",
    }


def _image_commands(model: str, sig_names: list[str]) -> dict[str, str]:
    """An image export: base64 JPEG/PNG bytes to ``serving_bytes``."""
    signature = "serving_bytes" if "serving_bytes" in sig_names or not sig_names else sig_names[0]
    return {
        "curl_command": (
            f'B64=$(base64 -w0 image.jpg)   # macOS: base64 -i image.jpg\n'
            f"curl -s -X POST localhost:8501/v1/models/{model}:predict \\\n"
            "  -H 'Content-Type: application/json' \\\n"
            f'  -d "{{\\"signature_name\\":\\"{signature}\\",'
            f'\\"instances\\":[{{\\"b64\\":\\"$B64\\"}}]}}"'
        ),
        "request_body": f'{{"signature_name": "{signature}", "instances": [{{"b64": "<base64 JPEG/PNG bytes>"}}]}}',
    }


def _text_commands(model: str) -> dict[str, str]:
    """A text export takes raw strings on ``serving_default``: the REST body is plain JSON."""
    body = '{"signature_name": "serving_default", "instances": ["the text to classify", "another one"]}'
    return {"curl_command": (f"curl -s -X POST localhost:8501/v1/models/{model}:predict \\\n"
                             "  -H 'Content-Type: application/json' \\\n"
                             f"  -d '{body}'"),
            "request_body": body}


def _export_info(run_dir: Path, config: dict | None) -> dict[str, Any] | None:
    """The latest ``export/<model>/<version>`` with its signatures, labels and serving commands."""
    root = run_dir / "export"
    if not root.is_dir():
        return None
    models = sorted(p for p in root.iterdir() if p.is_dir())
    wanted = _find_key(config, "model_name") if config else None
    models.sort(key=lambda p: p.name != wanted)  # the configured model first, if there is one
    for model_dir in models:
        # Numeric names only, as TF Serving loads them: an export killed midway leaves a hidden
        # ``.tmp-<version>-...`` directory, which is no export and must not be offered for serving.
        versions = sorted((p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=_version_key)
        complete = [p for p in versions if (p / "saved_model.pb").is_file()]
        if not complete:
            continue
        version_dir = complete[-1]
        labels_file = version_dir / "assets" / "labels.txt"
        labels = labels_file.read_text(encoding="utf-8").splitlines() if labels_file.is_file() else None
        signatures = read_signatures(version_dir)
        info = _export_paths(model_dir, version_dir, versions, signatures, labels)
        if _export_modality(version_dir) == "text":
            return {**info, **_text_commands(model_dir.name)}
        return {**info, **_image_commands(model_dir.name, [s["name"] for s in signatures or []])}
    return None


def _selected_backbones(trials: list[dict] | None, config: dict | None, leaderboard: list[dict] | None) -> list[str]:
    """Candidates that went on to tuning: those with trials, else the configured top-k by rank."""
    if trials:
        seen: list[str] = []
        for t in trials:
            b = t.get("backbone")
            if b is not None and b not in seen:
                seen.append(str(b))
        return seen
    top_k = _find_key(config, "top_k") if config else None
    if leaderboard and isinstance(top_k, int) and top_k > 0:
        ranked = sorted((r for r in leaderboard if r.get("rank") is not None), key=lambda r: r["rank"])
        return [str(r["name"]) for r in ranked[:top_k]]
    return []


def _verdict(tm: dict[str, Any] | None, ctx: dict[str, Any]) -> dict[str, Any] | None:
    """Fine-tune vs best-probe comparison: the file's verdict text if any, else a composed one."""
    if not tm:
        return None
    acc, probe_acc = tm.get("accuracy"), tm.get("probe_test_accuracy")
    beats = tm.get("finetune_beats_probe")
    diff_pp = (acc - probe_acc) * 100 if acc is not None and probe_acc is not None else None
    if beats is None and diff_pp is not None:
        beats = diff_pp > 0
    text = tm.get("verdict")
    composed = not text
    # Guess reasons only when composing: a run's own verdict already explains itself, and a second,
    # differently reasoned list beside it contradicted it.
    reasons: list[str] = _likely_reasons(ctx, diff_pp) if composed and not beats else []
    if not text and beats is not None:
        if beats and diff_pp is not None:
            text = f"fine-tuning beat the best linear probe by {diff_pp:.1f} pp"
        elif diff_pp is not None:
            text = (
                f"fine-tuning did NOT beat the probe ({acc:.1%} vs {probe_acc:.1%}): likely because "
                + "; ".join(reasons)
            )
        else:
            text = "fine-tuning beat the best linear probe" if beats else "fine-tuning did NOT beat the probe"
    return {
        "beats": beats,
        "text": text,
        "diff_pp": diff_pp,
        "accuracy": acc,
        "probe_accuracy": probe_acc,
        "probe_backbone": tm.get("probe_backbone"),
        "reasons": reasons,
        "composed": composed,
    }


def _likely_reasons(ctx: dict[str, Any], diff_pp: float | None) -> list[str]:
    """Likely causes when fine-tuning lost, from what the run directory shows (the run's own rules)."""
    data, best, trials = ctx.get("data") or {}, ctx.get("best") or {}, ctx.get("trials")
    tm = ctx.get("test_metrics") or {}
    train = (data.get("split_sizes") or {}).get("train")
    n_classes = data.get("num_classes") or len(data.get("class_names") or []) or None
    done = None if trials is None else len(
        [t for t in trials if (t.get("status") or "ok") in ("ok", "completed", "COMPLETED", "complete")])
    return loss_reasons(
        diff_pp=diff_pp, num_test=tm.get("num_test"),
        train_per_class=train / n_classes if train is not None and n_classes else None,
        unfreeze_blocks=(best.get("config") or {}).get("unfreeze_blocks"), trials_ok=done,
        val_accuracy=best.get("val_accuracy"), test_accuracy=tm.get("accuracy"),
    )


def load_context(run_dir: str | Path) -> dict[str, Any]:
    """Read every report input in ``run_dir`` into a plain, JSON-like dict (missing files -> ``None``)."""
    run_dir = Path(run_dir)
    warnings: list[str] = []
    ctx: dict[str, Any] = {
        "run_dir": run_dir.resolve().as_posix(),
        "run_name": run_dir.resolve().name,
        "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "warnings": warnings,
    }
    for key in ("config", "data", "best", "test_metrics", "timings", "final_model"):
        ctx[key] = _read_json(run_dir / f"{key}.json", warnings)
    ctx["examples"] = _read_json(run_dir / "test_examples.json", warnings)  # absent in runs before it existed

    lb = _read_csv(run_dir / "leaderboard.csv", warnings)
    ctx["leaderboard"], ctx["leaderboard_columns"] = (lb[0], _order_columns(lb[1], LEADERBOARD_COLUMNS)) if lb else (None, [])
    if ctx["leaderboard"]:
        # Failed candidates have no rank; keep them last.
        ctx["leaderboard"].sort(key=lambda r: (r.get("rank") is None, r.get("rank") or 0))
    ctx["scorer_columns"] = [
        c for c in ctx["leaderboard_columns"] if c.startswith("score_") and c not in LEADERBOARD_COLUMNS
    ]

    tr = _read_csv(run_dir / "trials.csv", warnings)
    ctx["trials"], ctx["trial_columns"] = (tr[0], _order_columns(tr[1], TRIAL_COLUMNS)) if tr else (None, [])

    ctx["export"] = _export_info(run_dir, ctx["config"])
    ctx["selected"] = _selected_backbones(ctx["trials"], ctx["config"], ctx["leaderboard"])

    present = {
        "data.json": ctx["data"] is not None,
        "leaderboard.csv": ctx["leaderboard"] is not None,
        "trials.csv": ctx["trials"] is not None,
        "best.json": ctx["best"] is not None,
        "test_metrics.json": ctx["test_metrics"] is not None,
        "export/": ctx["export"] is not None,
    }
    ctx["stages"] = [
        {"name": name, "ran": any(present[f] for f in files), "files": files} for name, files in STAGES
    ]
    ctx["missing_stages"] = [s["name"] for s in ctx["stages"] if not s["ran"]]

    tm = ctx["test_metrics"]
    if tm and tm.get("confusion_matrix") is not None and not tm.get("class_names"):
        tm["class_names"] = (ctx["data"] or {}).get("class_names") or [
            str(i) for i in range(len(tm["confusion_matrix"]))
        ]
    if tm and tm.get("note"):
        warnings.append(tm["note"])  # e.g. no test split: the scores are on val
    ctx["verdict"] = _verdict(tm, ctx)
    ctx["winner"] = (ctx["best"] or {}).get("backbone")
    ctx["probe_winner"] = ctx["leaderboard"][0].get("name") if ctx["leaderboard"] else None
    ctx["timings_total"] = _timings_total(ctx["timings"])
    ctx["config_flat"] = _flatten(ctx["config"]) if isinstance(ctx["config"], dict) else None
    return ctx


def _timings_total(timings: Any) -> float | None:
    if not isinstance(timings, dict):
        return None
    if isinstance(timings.get("total"), (int, float)):
        return float(timings["total"])
    vals = [v for v in timings.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return float(sum(vals)) if vals else None


def _flatten(obj: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested config -> ``[("tuning.learning_rate", [1e-5, 1e-3]), ...]``; lists of dicts stay whole."""
    out: list[tuple[str, Any]] = []
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.extend(_flatten(v, key + "."))
        else:
            out.append((key, v))
    return out


_SNAKE = re.compile(r"_+")


def humanize(name: str) -> str:
    """``feature_seconds`` -> ``feature seconds`` for column headers."""
    return _SNAKE.sub(" ", name).strip()
