"""Change events: what answers an endpoint (model, build, system fingerprint) or what it is asked
(the system prompt in the config) differs from the last run. Stored, exported, posted."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import datetime
from typing import Any

from sqlite_utils import Database

from watchdog.result import Change, ProbeResult
from watchdog.runtime.clock import rfc3339

TEMPLATE_KEYS = frozenset({"template_hash"})
# The golden set is the operator's own edit, and part of each result's fingerprint already.
IGNORED_KEYS = frozenset({"golden_set_hash"})


def identity_of(identity: dict[str, Any], results: list[ProbeResult]) -> dict[str, Any]:
    """The run's identity plus the system fingerprint most of its answers carried."""
    seen = Counter(r.answer.system_fingerprint for r in results if r.answer.system_fingerprint)
    out = {k: v for k, v in identity.items() if k not in IGNORED_KEYS}
    if seen:
        out["system_fingerprint"] = seen.most_common(1)[0][0]
    return out


def digest(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


def observe(
    db: Database, endpoint: str, identity: dict[str, Any], answered: bool, now: datetime
) -> Change | None:
    """Compare with the endpoint's last identity; store and return a change, if any.

    A run with no answer says nothing about what answers (a down server has no model ids), so
    it is not compared: a restart must not look like a model swap.
    """
    if not answered:
        return None
    at = rfc3339(now)
    current = digest(identity)
    rows = list(db.query("select * from identities where endpoint = ?", [endpoint]))
    row = {
        "endpoint": endpoint,
        "identity": json.dumps(identity, sort_keys=True),
        "digest": current,
    }
    if not rows:
        db.table("identities").insert({**row, "since": at})
        return None
    if rows[0]["digest"] == current:
        return None
    before = json.loads(rows[0]["identity"])
    changed = sorted(k for k in set(before) | set(identity) if before.get(k) != identity.get(k))
    kind = "template" if set(changed) <= TEMPLATE_KEYS else "fingerprint"
    detail = "; ".join(f"{k}: {_show(before.get(k))} → {_show(identity.get(k))}" for k in changed)
    change = Change(endpoint, at, kind, rows[0]["digest"], current, detail)  # type: ignore[arg-type]
    db.table("identities").upsert({**row, "since": at}, pk="endpoint")
    db.table("changes").insert({**change.to_json(), "at_ts": now.timestamp()})
    return change


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "none"
    return str(value)


def recent(db: Database, since_ts: float = 0.0) -> list[Change]:
    return [
        Change(r["endpoint"], r["at"], r["kind"], r["before"], r["after"], r["detail"])
        for r in db.query("select * from changes where at_ts >= ? order by at_ts", [since_ts])
    ]


def before(db: Database, endpoint: str, at_ts: float) -> Change | None:
    """The endpoint's nearest change at or before `at_ts`: the likely cause of what follows."""
    rows = list(
        db.query(
            "select * from changes where endpoint = ? and at_ts <= ? order by at_ts desc limit 1",
            [endpoint, at_ts],
        )
    )
    if not rows:
        return None
    r = rows[0]
    return Change(r["endpoint"], r["at"], r["kind"], r["before"], r["after"], r["detail"])
