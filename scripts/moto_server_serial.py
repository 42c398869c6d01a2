"""moto's server with its requests handled one at a time.

DynamoDB makes each request atomic (an `ADD` update, a conditional put, a transaction); moto's server handles
requests on concurrent threads without that guarantee, so two concurrent `ADD`s can both read the old value and
return the same number. The adapter contract tests race 100 increments and would fail at random. Connections are
still accepted concurrently; only the application runs under one lock, which is what AWS's per-request atomicity
amounts to for these tests.

Usage: python scripts/moto_server_serial.py -H 127.0.0.1 -p PORT (the environment configures moto as for
moto_server, e.g. MOTO_RECORDER_FILEPATH).
"""

import argparse
import os
import threading

from werkzeug.serving import run_simple

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))

    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def one_at_a_time(environ, start_response):
        with lock:
            # The body is produced inside the lock too: the request's whole effect happens there.
            return list(app(environ, start_response))

    run_simple(args.host, args.port, one_at_a_time, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
