from __future__ import annotations

import json

import numpy as np

from worker.core.messages import encode


def test_triggers_encode_as_compact_utf8_json_with_the_same_values():
    payload = {"customer_id": "c-ünï", "risk_score": 0.1234, "tiny": 1e-05, "big": 1e20, "whole": 3.0,
               "threshold": np.float64(0.55), "count": np.int64(7), "reasons": [{"feature": "x", "value": -2.5}],
               "none": None, "flag": True}
    raw = encode(payload)
    assert b" " not in raw and "c-ünï".encode() in raw  # compact, UTF-8 rather than \\u escapes
    assert json.loads(raw) == json.loads(json.dumps(payload, default=float))
    assert isinstance(json.loads(raw)["count"], int)


def test_a_payload_orjson_refuses_is_written_by_the_json_module():
    assert json.loads(encode({"n": 2**70})) == {"n": 2**70}
