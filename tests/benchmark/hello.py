"""The bare FastAPI app the service is measured against: one async route answering a small JSON object,
served by the same FastAPI and uvicorn as ``intygstjanst serve``, on the event loop and HTTP parser the
benchmark found the service's process using (``--loop``, ``--http``), one worker, no access log.

    python -m tests.benchmark.hello --port PORT --loop asyncio|uvloop --http h11|httptools
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI

app = FastAPI()


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", default="auto")
    parser.add_argument("--http", default="auto")
    args = parser.parse_args()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop=args.loop,
        http=args.http,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
