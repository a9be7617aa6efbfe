"""The service's throughput as a ratio to a bare FastAPI app: a measurement, not a test (README "Benchmark").

    .venv/bin/python -m tests.benchmark [--preload 100000] [--seconds 5] [--connections 32]
                                        [--database-url URL] [--business-rules DIR]

One invocation, PostgreSQL: a throwaway cluster (``tests/postgres.py``) unless ``--database-url`` names
an empty database; ``intygstjanst migrate``; ``intygstjanst serve`` (one worker, fresh keys of
encryption at rest) and ``hello.py`` (the same FastAPI and uvicorn, the same event loop and HTTP
parser) on loopback ports. After a set-up (certificates to read, list and change; the citizens'
consent), each operation runs at full load and then at half of the peak it reached, and a full-load
run of hello comes between every two operations, so each ratio is to the hello runs on either side of
it, in the same minute on the same noisy machine. Statements per request come from the service's
``intyg_db_statements_total{source="request"}`` counter over the half-load run. Registers are checked
against the business rules (``--business-rules``, ../shared's rule set by default) and measured again
on a second service without them, so the table shows what the check costs. Then ``--preload``
certificates are added (``preload.py``) and the table is measured again: gets and lists should not
slow down as the store grows.

``load.py`` says how load is made and why (wrk must be installed: ``apt-get install wrk``). Bounded
in count and time; talks only to 127.0.0.1; stops every process it started, on Ctrl-C too.
"""
