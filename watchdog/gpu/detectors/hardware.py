"""gpu_hardware: recent XID events, uncorrectable ECC, failed or pending row remaps, lost GPUs."""

from __future__ import annotations

from watchdog.gpu.detectors._format import duration
from watchdog.gpu.detectors.context import Context
from watchdog.result import Finding

# The common meaning of well-known XIDs (NVIDIA's XID catalogue), so a page says what broke.
XID_MEANING = {
    13: "graphics engine exception, usually an application fault",
    31: "GPU memory page fault, usually an application's illegal address",
    43: "GPU stopped processing, a user application fault",
    45: "preemptive cleanup after earlier errors",
    48: "double-bit ECC error",
    61: "internal micro-controller breakpoint/warning",
    62: "internal micro-controller halt",
    63: "ECC page retirement or row remap recorded",
    64: "ECC page retirement or row remap failed to record",
    74: "NVLink error",
    79: "GPU has fallen off the bus",
    92: "high single-bit ECC error rate",
    94: "contained ECC error: restart the affected application",
    95: "uncontained ECC error: the GPU needs a reset",
    119: "GSP RPC timeout",
    120: "GSP error",
}

# Raised by a faulting program, not by the hardware: counted and shown, but no page on their
# own (the endpoint's probes page if the server died of it).
APPLICATION_XIDS = frozenset({13, 31, 43, 45})


def detect(context: Context) -> list[Finding]:
    hold = context.settings.hardware.hold
    recent: dict[str, list[str]] = {}
    application: dict[str, list[str]] = {}
    for (uuid, code), seen in sorted(context.xids.items()):
        if context.now - seen.last_seen <= hold:
            meaning = XID_MEANING.get(code)
            text = f"XID {code} ×{seen.count}" + (f" ({meaning})" if meaning else "")
            ago = duration(max(context.now - seen.last_seen, 0))
            kept = application if code in APPLICATION_XIDS else recent
            kept.setdefault(uuid, []).append(f"{text}, last {ago} ago")
    findings = []
    # A lost GPU may have no sample left; it still needs its finding.
    for uuid in sorted(set(context.history) | set(recent) | set(application) | context.lost):
        reasons = list(recent.get(uuid, []))
        history = context.history.get(uuid, ())
        if history:
            latest = history[-1]
            if latest.ecc_uncorrected_volatile:
                n = latest.ecc_uncorrected_volatile
                reasons.append(f"{n} uncorrectable ECC error(s) since the driver loaded")
            if latest.remap_failed:
                reasons.append("row remapping failed: the GPU needs replacing")
            if latest.remap_pending:
                reasons.append("row remap pending: reset the GPU to apply it")
        if uuid in context.lost:
            reasons.append("GPU fell off the bus / lost")
        label = context.names.get(uuid, uuid)
        failing = bool(reasons)
        reasons += application.get(uuid, [])
        summary = f"{label}: {'; '.join(reasons)}" if reasons else f"{label}: no hardware errors"
        findings.append(Finding(uuid, failing, summary, value=float(len(reasons))))
    return findings
