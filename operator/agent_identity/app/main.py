"""The entry point (console script ``agent-identity-operator``): configuration from flags and
environment (``config``), logging, then kopf runs the handlers (``handlers``), which start the
operator (``startup``)."""

from __future__ import annotations

import gc
import logging
import logging.handlers
import sys

from agent_identity.app import handlers
from agent_identity.app.config import OperatorConfig, parse_args
from agent_identity.ops import audit

log = logging.getLogger("agent_identity")

# Second-generation collections between two full ones (CPython's default: 10). See _tune_collector.
FULL_COLLECTION_AFTER = 1000


def _configure_logging(config: OperatorConfig) -> None:
    """Audit lines go to stdout (or ``--audit-file``, rotated by size) as bare JSON, one per line,
    whatever kopf does to other loggers."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler: logging.Handler = (
        logging.handlers.RotatingFileHandler(
            config.audit_file,
            maxBytes=config.audit_file_max_mb * 1024 * 1024,
            backupCount=config.audit_file_backups,
            encoding="utf-8",
        )
        if config.audit_file
        else logging.StreamHandler(sys.stdout)
    )
    handler.setFormatter(logging.Formatter("%(message)s"))
    audit_logger = logging.getLogger(audit.LOGGER_NAME)
    audit_logger.handlers[:] = [handler]
    audit_logger.setLevel(logging.INFO)
    audit_logger.propagate = False
    # kopf logs "Handler ... succeeded" at INFO for every watch event: at a burst of 1,000
    # identities that is 7,000 lines saying nothing. Its warnings and errors still show.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # aiohttp logs every webhook request at INFO: two lines per create, which
    # agentidentity_webhook_requests_total counts by webhook and outcome.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _tune_collector() -> None:
    """Fewer full garbage collections, none of them over what start-up built.

    A full collection walks every object the collector tracks (two per cached identity), holding
    the GIL, and CPython 3.11 runs one whenever a quarter as many objects as the last one kept
    have since outlived two young collections. Every page of a listing does: 2,000 parsed
    identities live while the page is cached. A cold listing of 100,000 identities ran 71-83 full
    collections, 12-15 s of CPU, more than caching them took (tests/unit/test_collector.py counts
    them). Young collections are left as they are, so short-lived cycles still die young; a full
    one waits for ``FULL_COLLECTION_AFTER`` second-generation ones instead of 10; what start-up
    built (modules, classes, the configuration) is never collected, so it is frozen out of every
    collection."""
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_AFTER)


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    _configure_logging(config)
    _tune_collector()
    if not config.webhooks:
        log.warning(
            "UNSAFE: running without admission webhooks (--unsafe-no-admission-webhooks): creators are not verified "
            "and any creator annotation a client writes is believed. Never run this way on a shared cluster."
        )
    handlers.run(config)


if __name__ == "__main__":
    main()
