"""`sglang`: SGLang's OpenAI chat API, with `/health_generate` for readiness: SGLang generates one
token there (none while it is busy with other requests), so a stuck scheduler fails it."""

from __future__ import annotations

from watchdog.probers.api import Api
from watchdog.probers.identity import identify
from watchdog.probers.openai_chat import probe

API = Api(
    "sglang",
    probe,
    identify,
    health_path="/health",
    ready_path="/health_generate",
    serves_metrics=True,  # the `sglang:` family, with --enable-metrics
)
