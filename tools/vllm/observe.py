#!/usr/bin/env python3
"""Probe a running vLLM OpenAI server and print raw exchanges as Markdown.

    observe.py BASE_URL SUITE [--model NAME] [--log FILE]

SUITE is one of: main (server with --enable-prompt-tokens-details), extra (boundaries), nodetails (server
started with --no-enable-prompt-tokens-details --enable-request-id-headers), pooling
(server with --runner pooling --convert embed), metrics, hangup.

Stdlib only (runs with any python3). Each exchange is printed as the exact request
body sent and the raw status line, headers and body received (streams verbatim),
which is what tools/vllm/OBSERVED.md is made of.
"""

import argparse
import http.client
import json
import socket
import sys
import time
import urllib.parse

MODEL = "tiny-llama"
LONG_TEXT = (
    "The gateway routes each request to the server most likely to answer it fast. "
    "Prefix caching lets a server reuse the work it already did for a shared prompt. "
) * 24  # ~ 700-800 tokens with the tiny tokenizer


def conn(base):
    u = urllib.parse.urlparse(base)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=600)


def raw(base, method, path, body=None, headers=None, show_body=True, note=None, max_body=2400):
    h = {}
    data = None
    if body is not None:
        if isinstance(body, (bytes, str)):
            data = body.encode() if isinstance(body, str) else body
        else:
            data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    h.update(headers or {})
    c = conn(base)
    t0 = time.time()
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    payload = r.read()
    dt = time.time() - t0
    c.close()
    out = []
    if note:
        out.append(note + "\n")
    req_hdrs = "".join(f"{k}: {v}\n" for k, v in (headers or {}).items())
    shown = data.decode(errors="replace") if data is not None else None
    if shown is not None and len(shown) > 1200:
        shown = shown[:400] + f" \N{HORIZONTAL ELLIPSIS}[request body {len(data)} bytes, middle elided]\N{HORIZONTAL ELLIPSIS} " + shown[-250:]
    out.append("```http\n" + f"{method} {path} HTTP/1.1\n" + req_hdrs
               + (("\n" + shown) if shown is not None else "") + "\n```\n")
    text = payload.decode(errors="replace")
    if max_body and len(text) > max_body and "event-stream" not in (r.getheader("content-type") or ""):
        text = (text[: max_body // 2] + f" \N{HORIZONTAL ELLIPSIS}[response body {len(payload)} bytes, middle elided]"
                f"\N{HORIZONTAL ELLIPSIS} " + text[-max_body // 2:])
    resp = f"HTTP/1.1 {r.status} {r.reason}\n" + "".join(f"{k}: {v}\n" for k, v in r.getheaders())
    out.append("```http\n" + resp + ("\n" + text if show_body else "") + "\n```\n")
    out.append(f"_({dt*1000:.0f} ms)_\n")
    print("\n".join(out))
    sys.stdout.flush()
    return r.status, dict((k.lower(), v) for k, v in r.getheaders()), payload


def section(title, level=3):
    print("\n" + "#" * level + " " + title + "\n")


def chat_body(content, **kw):
    b = {"model": MODEL, "messages": [{"role": "user", "content": content}]}
    b.update(kw)
    return b


def suite_main(base):
    section("Discovery", 2)
    for m, p in [("GET", "/v1/models"), ("GET", "/version"), ("GET", "/health"), ("GET", "/ping"),
                 ("GET", "/v1/nope"), ("POST", "/v1/models"), ("GET", "/v1/chat/completions"),
                 ("POST", "/health")]:
        section(f"{m} {p}")
        raw(base, m, p, body={} if m == "POST" and p != "/health" else None)

    section("/v1/chat/completions", 2)
    section("non-stream, max_tokens 8, temperature 0")
    raw(base, "POST", "/v1/chat/completions", chat_body("Hello, how are you?", max_tokens=8, temperature=0))
    section("non-stream, `stop: [\"the\"]`, max_tokens 64 (stop_reason)")
    raw(base, "POST", "/v1/chat/completions",
        chat_body("Tell me about the gateway.", max_tokens=64, temperature=0, stop=["the", "e"]))
    section("stream, no stream_options")
    raw(base, "POST", "/v1/chat/completions", chat_body("Hello!", max_tokens=4, temperature=0, stream=True))
    section("stream, stream_options include_usage + continuous_usage_stats")
    raw(base, "POST", "/v1/chat/completions",
        chat_body("Hello!", max_tokens=4, temperature=0, stream=True,
                  stream_options={"include_usage": True, "continuous_usage_stats": True}))
    section("stream, stream_options include_usage only")
    raw(base, "POST", "/v1/chat/completions",
        chat_body("Hello!", max_tokens=4, temperature=0, stream=True, stream_options={"include_usage": True}))
    section("x-request-id: abc123, non-stream")
    raw(base, "POST", "/v1/chat/completions", chat_body("Hi", max_tokens=2, temperature=0),
        headers={"x-request-id": "abc123"})
    section("x-request-id: abc123, stream")
    raw(base, "POST", "/v1/chat/completions",
        chat_body("Hi", max_tokens=2, temperature=0, stream=True), headers={"x-request-id": "abc123"})
    section("body field request_id: \"body-req-1\" (vLLM extension)")
    raw(base, "POST", "/v1/chat/completions",
        chat_body("Hi", max_tokens=2, temperature=0, request_id="body-req-1"))
    section("prefix caching: same long prompt twice (cached_tokens)")
    body = chat_body(LONG_TEXT, max_tokens=4, temperature=0)
    raw(base, "POST", "/v1/chat/completions", body, note="First send:")
    raw(base, "POST", "/v1/chat/completions", body, note="Second send (identical body):")
    raw(base, "POST", "/v1/chat/completions",
        dict(body, stream=True, stream_options={"include_usage": True}), note="Third send, streamed:")
    section("cache_salt: same long prompt with salt \"tenant-a\" twice, then \"tenant-b\"")
    for salt in ["tenant-a", "tenant-a", "tenant-b"]:
        raw(base, "POST", "/v1/chat/completions", dict(body, cache_salt=salt), note=f"cache_salt={salt!r}:")

    section("Default max_tokens (omitted)", 2)
    section("chat, max_tokens omitted, temperature 0")
    raw(base, "POST", "/v1/chat/completions", chat_body("Hello", temperature=0), max_body=1500)
    section("completions, max_tokens omitted, temperature 0")
    raw(base, "POST", "/v1/completions", {"model": MODEL, "prompt": "Hello", "temperature": 0}, max_body=1500)
    section("chat, max_tokens omitted, default sampling (no temperature)")
    raw(base, "POST", "/v1/chat/completions", chat_body("Hello"), max_body=1500)

    section("/v1/completions", 2)
    section("non-stream")
    raw(base, "POST", "/v1/completions", {"model": MODEL, "prompt": "The gateway", "max_tokens": 6, "temperature": 0})
    section("stream with include_usage + continuous_usage_stats")
    raw(base, "POST", "/v1/completions",
        {"model": MODEL, "prompt": "The gateway", "max_tokens": 4, "temperature": 0, "stream": True,
         "stream_options": {"include_usage": True, "continuous_usage_stats": True}})
    section("stream, no stream_options")
    raw(base, "POST", "/v1/completions",
        {"model": MODEL, "prompt": "The gateway", "max_tokens": 3, "temperature": 0, "stream": True})

    section("/v1/responses", 2)
    section("non-stream")
    raw(base, "POST", "/v1/responses", {"model": MODEL, "input": "Hello", "max_output_tokens": 6, "temperature": 0})
    section("stream")
    raw(base, "POST", "/v1/responses",
        {"model": MODEL, "input": "Hello", "max_output_tokens": 4, "temperature": 0, "stream": True})

    section("/v1/embeddings on the generation model", 2)
    raw(base, "POST", "/v1/embeddings", {"model": MODEL, "input": "hello"})

    section("Errors", 2)
    long_prompt = "word " * 1500
    huge_prompt = "word " * 2100
    cases = [
        ("max_tokens 4096 > max_model_len 2048", chat_body("Hi", max_tokens=4096)),
        ("max_tokens 2048 == max_model_len", chat_body("Hi", max_tokens=2048)),
        ("prompt ~1500 tokens + max_tokens 1000 > 2048 (max_tokens < max_model_len)",
         chat_body(long_prompt, max_tokens=1000, temperature=0)),
        ("prompt ~1500 tokens, max_tokens omitted", chat_body(long_prompt, temperature=0)),
        ("prompt alone > max_model_len (~2100 tokens), max_tokens 10", chat_body(huge_prompt, max_tokens=10)),
        ("prompt alone > max_model_len, max_tokens omitted", chat_body(huge_prompt)),
        ("completions: prompt alone > max_model_len", {"model": MODEL, "prompt": huge_prompt, "max_tokens": 10}),
        ("completions: prompt 1500 + max_tokens 1000",
         {"model": MODEL, "prompt": long_prompt, "max_tokens": 1000, "temperature": 0}),
        ("stream_options with stream false",
         chat_body("Hi", max_tokens=2, stream=False, stream_options={"include_usage": True})),
        ("stream_options with stream omitted", chat_body("Hi", max_tokens=2, stream_options={"include_usage": True})),
        ("invalid JSON body", '{"model": "tiny-llama", "messages": ['),
        ("empty body", ""),
        ("missing messages", {"model": MODEL, "max_tokens": 2}),
        ("messages: []", {"model": MODEL, "messages": [], "max_tokens": 2}),
        ("unknown model name", dict(chat_body("Hi", max_tokens=2), model="no-such-model")),
        ("model omitted", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}),
        ("max_tokens 0", chat_body("Hi", max_tokens=0)),
        ("max_tokens -1", chat_body("Hi", max_tokens=-1)),
        ("temperature -1", chat_body("Hi", max_tokens=2, temperature=-1)),
        ("n 2", chat_body("Hi", max_tokens=2, n=2, temperature=1)),
        ("cache_salt \"a/b\"", chat_body("Hi", max_tokens=2, cache_salt="a/b")),
        ("cache_salt \"\"", chat_body("Hi", max_tokens=2, cache_salt="")),
        ("cache_salt 129 chars", chat_body("Hi", max_tokens=2, cache_salt="x" * 129)),
        ("cache_salt 128 chars", chat_body("Hi", max_tokens=2, cache_salt="x" * 128)),
        ("cache_salt 1000 chars", chat_body("Hi", max_tokens=2, cache_salt="x" * 1000)),
        ("cache_salt non-string (123)", chat_body("Hi", max_tokens=2, cache_salt=123)),
        ("cache_salt null", chat_body("Hi", max_tokens=2, cache_salt=None)),
        ("cache_salt normal \"tenant-42\"", chat_body("Hi", max_tokens=2, cache_salt="tenant-42")),
        ("completions cache_salt \"\"", {"model": MODEL, "prompt": "Hi", "max_tokens": 2, "cache_salt": ""}),
        ("unknown field foo", chat_body("Hi", max_tokens=2, foo="bar")),
    ]
    for title, b in cases:
        section(title)
        raw(base, "POST", "/v1/completions" if "completions:" in title or title.startswith("completions")
            else "/v1/chat/completions", b, max_body=3000)
    section("errors on a streamed request: prompt > max_model_len, stream true")
    raw(base, "POST", "/v1/chat/completions", chat_body(huge_prompt, max_tokens=10, stream=True), max_body=3000)
    section("Content-Type text/plain with a valid JSON body")
    c = conn(base)
    c.request("POST", "/v1/chat/completions", body=json.dumps(chat_body("Hi", max_tokens=2)).encode(),
              headers={"Content-Type": "text/plain"})
    r = c.getresponse()
    print("```http\nHTTP/1.1 %d %s\n%s\n%s\n```\n" % (r.status, r.reason,
          "".join(f"{k}: {v}\n" for k, v in r.getheaders()), r.read().decode()))


def suite_extra(base):
    section("Context-length boundaries (token-id prompts on /v1/completions, exact lengths)", 2)
    for n, mt in [(2047, None), (2047, 1), (2047, 5), (2048, None), (2048, 1), (2040, 100)]:
        b = {"model": MODEL, "prompt": [100] * n, "temperature": 0}
        if mt is not None:
            b["max_tokens"] = mt
        section(f"prompt = {n} token ids, max_tokens = {mt}")
        raw(base, "POST", "/v1/completions", b, max_body=1600)
    section("max_completion_tokens (chat), no max_tokens")
    raw(base, "POST", "/v1/chat/completions", chat_body("Hi", max_completion_tokens=3, temperature=0))
    section("max_completion_tokens and max_tokens both set")
    raw(base, "POST", "/v1/chat/completions", chat_body("Hi", max_completion_tokens=3, max_tokens=5, temperature=0))
    section("stream_options include_usage false")
    raw(base, "POST", "/v1/chat/completions",
        chat_body("Hi", max_tokens=2, temperature=0, stream=True, stream_options={"include_usage": False}))
    section("ignore_eos true, max_tokens 3 (vLLM extension)")
    raw(base, "POST", "/v1/chat/completions", chat_body("Hi", max_tokens=3, temperature=0, ignore_eos=True))
    section("messages with a system prompt and a list-of-parts content")
    raw(base, "POST", "/v1/chat/completions",
        {"model": MODEL, "max_tokens": 2, "temperature": 0,
         "messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": [{"type": "text", "text": "Hi"}]}]})
    section("HEAD /health, GET /metrics with Accept: application/openmetrics-text")
    raw(base, "HEAD", "/health")
    raw(base, "GET", "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}, max_body=400)
    section("POST /tokenize (vLLM extension)")
    raw(base, "POST", "/tokenize", {"model": MODEL, "prompt": "Hello world"})
    raw(base, "POST", "/tokenize", {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]})


def suite_nodetails(base):
    section("Server without --enable-prompt-tokens-details (and with --enable-request-id-headers)", 2)
    body = chat_body(LONG_TEXT, max_tokens=4, temperature=0)
    raw(base, "POST", "/v1/chat/completions", body, note="First send:")
    raw(base, "POST", "/v1/chat/completions", body, note="Second send (identical body):")
    raw(base, "POST", "/v1/chat/completions",
        dict(body, stream=True, stream_options={"include_usage": True, "continuous_usage_stats": True}),
        note="Streamed:")
    raw(base, "POST", "/v1/completions", {"model": MODEL, "prompt": LONG_TEXT, "max_tokens": 2, "temperature": 0},
        note="/v1/completions:")
    section("x-request-id with --enable-request-id-headers")
    raw(base, "POST", "/v1/chat/completions", chat_body("Hi", max_tokens=2, temperature=0),
        headers={"x-request-id": "abc123"}, note="with x-request-id: abc123")
    raw(base, "POST", "/v1/chat/completions", chat_body("Hi", max_tokens=2, temperature=0, stream=True),
        headers={"x-request-id": "abc123"}, note="stream, with x-request-id: abc123")
    raw(base, "POST", "/v1/chat/completions", chat_body("Hi", max_tokens=2, temperature=0),
        note="without x-request-id")
    raw(base, "GET", "/v1/models", headers={"x-request-id": "abc123"}, note="GET /v1/models with x-request-id")


def suite_pooling(base):
    section("Pooling server (--runner pooling --convert embed)", 2)
    raw(base, "GET", "/v1/models")
    raw(base, "POST", "/v1/embeddings", {"model": MODEL, "input": "hello world"}, max_body=4000)
    raw(base, "POST", "/v1/embeddings", {"model": MODEL, "input": ["hello", "world"], "encoding_format": "base64"},
        max_body=4000)
    raw(base, "POST", "/v1/embeddings", {"model": MODEL, "input": "hello", "dimensions": 8}, max_body=4000)
    raw(base, "POST", "/v1/chat/completions", chat_body("Hi", max_tokens=2), max_body=4000)
    raw(base, "POST", "/v1/completions", {"model": MODEL, "prompt": "Hi", "max_tokens": 2}, max_body=4000)
    raw(base, "POST", "/v1/embeddings", {"model": MODEL, "input": "word " * 2100}, max_body=4000)


def suite_metrics(base):
    status, hdrs, payload = raw(base, "GET", "/metrics", show_body=False)
    text = payload.decode()
    print("First 3 lines:\n```\n" + "\n".join(text.splitlines()[:3]) + "\n```\n")
    fams = {}
    order = []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ", 3)
            fams[name] = {"type": typ, "labels": set(), "help": fams.get(name, {}).get("help", "")}
            order.append(name)
        elif line.startswith("# HELP "):
            _, _, name, help_ = line.split(" ", 3)
            fams.setdefault(name, {"type": "?", "labels": set(), "help": ""})["help"] = help_
        elif line and not line.startswith("#"):
            metric = line.split("{")[0].split(" ")[0]
            labels = []
            if "{" in line:
                inner = line[line.index("{") + 1: line.rindex("}")]
                for part in inner.split('",'):
                    if "=" in part:
                        labels.append(part.split("=")[0].strip())
            base_name = metric
            for suf in () if metric in fams else ("_bucket", "_sum", "_count", "_total", "_created", "_info"):
                if metric.endswith(suf) and metric[: -len(suf)] in fams:
                    base_name = metric[: -len(suf)]
            if base_name in fams:
                fams[base_name]["labels"].update(l for l in labels if l != "le")
    print("| family | TYPE | labels (besides le) | HELP |\n|---|---|---|---|")
    for n in order:
        f = fams[n]
        print(f"| `{n}` | {f['type']} | {', '.join(sorted(f['labels'])) or '-'} | {f['help']} |")
    print()


def metric_lines(base, prefixes):
    c = conn(base)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    c.close()
    return [l for l in text.splitlines() if l.startswith(prefixes)]


HANGUP_METRICS = ("vllm:num_requests_running", "vllm:request_success_total", "vllm:generation_tokens_total",
                  "vllm:e2e_request_latency_seconds_count", "vllm:request_generation_tokens_count",
                  "vllm:prompt_tokens_total", "http_requests_total{handler=\"/v1/chat/completions\"")


def suite_hangup(base):
    """Open a long stream, read a few events, then close the socket; watch /metrics."""
    print("Metrics before:\n```\n" + "\n".join(metric_lines(base, HANGUP_METRICS)) + "\n```\n")
    body = json.dumps(chat_body("Write a long story.", max_tokens=2000, temperature=1, ignore_eos=True,
                                 stream=True)).encode()
    u = urllib.parse.urlparse(base)
    s = socket.create_connection((u.hostname, u.port))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"x-request-id: hangup-test-1\r\n"
              + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    got = b""
    while got.count(b"data: ") < 5:
        got += s.recv(4096)
    print("Metrics while streaming (after 5 events):\n```\n"
          + "\n".join(metric_lines(base, HANGUP_METRICS)) + "\n```\n")
    s.close()
    t_close = time.time()
    print("Read %d bytes (%d events) then closed the socket. Raw bytes received (chunked framing visible):\n"
          % (len(got), got.count(b"data: ")))
    print("```\n" + got.decode(errors="replace")[:1200] + "\n```\n")
    for delay in (0.2, 1.0, 3.0):
        time.sleep(max(0.0, t_close + delay - time.time()))
        print(f"Metrics {delay}s after close:\n```\n" + "\n".join(metric_lines(base, HANGUP_METRICS)) + "\n```\n")


def main():
    global MODEL
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("suite")
    ap.add_argument("--model", default=MODEL)
    a = ap.parse_args()
    MODEL = a.model
    {"main": suite_main, "extra": suite_extra, "nodetails": suite_nodetails, "pooling": suite_pooling,
     "metrics": suite_metrics, "hangup": suite_hangup}[a.suite](a.base.rstrip("/"))


if __name__ == "__main__":
    main()
