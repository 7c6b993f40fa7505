# mlops-watchdog as a container: `docker build -t mlops-watchdog .`
# The daemon reads /etc/mlops-watchdog/config.yaml (mount it; its `listen:` must be
# "0.0.0.0:9464" for the port to be reachable from outside) and keeps its database and reports
# in /var/lib/mlops-watchdog. deploy/kubernetes/ runs it as a DaemonSet on GPU nodes;
# deploy/README.md has more. `make test` lints this file with hadolint.

# --- build: the program in its own venv (PyPI's `watchdog` also installs `watchdog/`) --------
FROM python:3.12-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY watchdog ./watchdog
# watchdog/data links to these: the wheel carries the golden sets, templates and dashboards.
COPY alerts ./alerts
COPY dashboards ./dashboards
COPY golden_sets ./golden_sets
COPY probes ./probes
# Every dependency ships manylinux wheels for CPython 3.12: no compiler, no apt.
RUN python -m venv /opt/mlops-watchdog \
    && /opt/mlops-watchdog/bin/pip install --no-cache-dir . \
    && /opt/mlops-watchdog/bin/mlops-watchdog --help >/dev/null

# --- runtime: the same base, so the venv's interpreter link resolves -------------------------
FROM python:3.12-slim
LABEL org.opencontainers.image.title="mlops-watchdog" \
      org.opencontainers.image.description="Golden-prompt probes and GPU telemetry for self-hosted LLMs" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric user, so that Kubernetes' runAsNonRoot can check it. No login; its home is
# the state directory, which it alone may read (the database may hold model text).
RUN groupadd --system --gid 10001 mlops-watchdog \
    && useradd --system --no-log-init --uid 10001 --gid 10001 --no-create-home \
        --home-dir /var/lib/mlops-watchdog --shell /usr/sbin/nologin mlops-watchdog \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/mlops-watchdog
COPY --from=build /opt/mlops-watchdog /opt/mlops-watchdog
# Bytecode was compiled at install time; a read-only root file system cannot take more.
ENV PATH=/opt/mlops-watchdog/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /var/lib/mlops-watchdog
VOLUME ["/var/lib/mlops-watchdog"]
USER 10001:10001
# /metrics, /healthz, /readyz and the status page.
EXPOSE 9464
# slim has no curl: Python's urllib fails (exit 1) on a refused connection or any status >= 400.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4)"]
ENTRYPOINT ["mlops-watchdog"]
CMD ["run", "--config", "/etc/mlops-watchdog/config.yaml"]
