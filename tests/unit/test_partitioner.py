"""The worker's partitioner is Kafka's: the Java client's test vectors, and aiokafka's on any key."""
from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from worker.core.partitioner import murmur2, partition_of

# org.apache.kafka.common.utils.UtilsTest#testMurmur2 (signed 32-bit results)
JAVA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("key", "expected"), JAVA_VECTORS.items())
def test_java_client_vectors(key, expected):
    signed = murmur2(key) - 2**32 if murmur2(key) >= 2**31 else murmur2(key)
    assert signed == expected


def test_same_as_aiokafka_for_every_length_and_byte():
    rng = random.Random(7)
    keys = [b"", b"\x00", b"\xff" * 7] + [rng.randbytes(rng.randrange(0, 70)) for _ in range(5000)]
    for key in keys:
        assert murmur2(key) == aiokafka_murmur2(key), key


def test_partition_matches_aiokafka_default_partitioner():
    from aiokafka.partitioner import DefaultPartitioner

    partitions = list(range(12))
    for i in range(2000):
        key = f"c-{i:06d}".encode()
        assert partition_of(key, 12) == DefaultPartitioner()(key, partitions, partitions)
