"""moto's server, answering one request at a time.

`moto_server` serves requests on threads, and moto checks `If-None-Match: *` and then stores
the object in two separate steps, so two racing conditional PUTs can both succeed there.
Real S3 makes that check atomic; serving requests one by one gives the tests the same
guarantee, so a concurrency test fails only for a bug of ours. Same app, same request handler.
"""

import sys

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

if __name__ == "__main__":
    # moto_serial.py PORT [CERT KEY]: with a certificate and key, it serves HTTPS, as AWS does.
    run_simple(
        "127.0.0.1",
        int(sys.argv[1]),
        DomainDispatcherApplication(create_backend_app),
        threaded=False,
        request_handler=MotoRequestHandler,
        ssl_context=(sys.argv[2], sys.argv[3]) if len(sys.argv) == 4 else None,
    )
