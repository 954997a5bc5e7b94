"""A sync in its own process without Prefect, for the fast crash drill: `python -m
tests.reliability.worker DB BASE_URL INTEGRATION_ID [--full]`, the key in KOMBO_API_KEY.

It starts in about a second (the `stagewatch sync` command needs four), so the store's crash hooks
(`STAGEWATCH_TEST_CRASH_AT`) can be drilled inside `make test`.
"""

from __future__ import annotations

import argparse
import os

import httpx

from tests.reliability.harness import sync_in_process


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db", help="a SQLite file or a postgresql:// URL")
    parser.add_argument("base_url")
    parser.add_argument("integration_id")
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--page-size", type=int, default=25)
    args = parser.parse_args()
    synced = sync_in_process(
        args.db,
        httpx.HTTPTransport(),
        args.integration_id,
        os.environ["KOMBO_API_KEY"],
        mode="full" if args.full else "incremental",
        page_size=args.page_size,
        base_url=args.base_url,
    )
    print(synced.outcome.model_dump_json())


if __name__ == "__main__":
    main()
