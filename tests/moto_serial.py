"""moto's server, answering one request at a time, and optionally recording every request.

`moto_server` serves requests on threads, and moto checks `If-None-Match: *` and then stores
the object in two separate steps, so two racing conditional PUTs can both succeed there.
Real S3 makes that check atomic; serving requests one by one gives the tests the same
guarantee, so a concurrency test fails only for a bug of ours. Same app, same request handler.

With `--record FILE`, each request is appended to FILE as one JSON line (method, host, path,
query, the headers that say who signed it and what it is, the body of anything but an object
upload, and the answer's status), for the permission tests (tests/iam/): they map each request
to the IAM actions it needs and evaluate them against the policies the stack renders.
"""

import base64
import io
import json
import sys

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

BODY_LIMIT = 1 << 20  # bodies kept up to 1 MiB: API calls, never object data
# Bodies that carry an API call's parameters (JSON, query and XML protocols); object uploads
# (application/octet-stream, or none) are not kept.
API_BODIES = ("json", "x-www-form-urlencoded", "xml", "x-amz-json")


class Recorder:
    """WSGI middleware: every request, as the permission tests read it, one JSON line each."""

    def __init__(self, app, path):
        self.app = app
        self.out = open(path, "a", buffering=1)  # noqa: SIM115, PTH123 - open for the server's life

    def __call__(self, environ, start_response):
        headers = {
            key[5:].lower().replace("_", "-"): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
            and (key.startswith(("HTTP_X_AMZ", "HTTP_AUTHORIZATION", "HTTP_HOST", "HTTP_IF_")))
        }
        content_type = environ.get("CONTENT_TYPE", "")
        headers["content-type"] = content_type
        body = b""
        length = environ.get("CONTENT_LENGTH")
        if length and length.isdigit() and int(length) <= BODY_LIMIT:
            body = environ["wsgi.input"].read(int(length))
            environ["wsgi.input"] = io.BytesIO(body)
            if not any(kind in content_type for kind in API_BODIES) and b"<Delete" not in body[:200]:
                body = b""
        seen = {}

        def answer(status, response_headers, exc_info=None):
            seen["status"] = int(status.split()[0])
            return start_response(status, response_headers, exc_info)

        result = list(self.app(environ, answer))
        answered = b"".join(result)
        if not answered.startswith(b"{") or len(answered) > BODY_LIMIT:
            answered = b""
        self.out.write(
            json.dumps(
                {
                    "http": {
                        "method": environ["REQUEST_METHOD"],
                        "scheme": environ.get("wsgi.url_scheme", "http"),
                        "path": environ.get("RAW_URI", environ.get("PATH_INFO", "")).split("?", 1)[0],
                        "query": environ.get("QUERY_STRING", ""),
                        "headers": headers,
                        "body": base64.b64encode(body).decode(),
                    },
                    "status": seen.get("status", 0),
                    # JSON answers (Batch, ECR, Logs, KMS...): the ids AWS chose, e.g. a job's.
                    "response": answered.decode(errors="replace"),
                }
            )
            + "\n"
        )
        return result


if __name__ == "__main__":
    # moto_serial.py PORT [CERT KEY] [--record FILE]: with a certificate and key, it serves
    # HTTPS, as AWS does.
    args = sys.argv[1:]
    record = None
    if "--record" in args:
        at = args.index("--record")
        record = args[at + 1]
        del args[at : at + 2]
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        "127.0.0.1",
        int(args[0]),
        Recorder(app, record) if record else app,
        threaded=False,
        request_handler=MotoRequestHandler,
        ssl_context=(args[1], args[2]) if len(args) == 3 else None,
    )
