"""The loopback S3 server itself: real s3fs clients against moto, through the fault-injecting proxy."""

from __future__ import annotations

import fsspec
import pytest


def test_faults_are_injected_and_retried_by_s3fs(s3_bucket) -> None:
    server = s3_bucket.server
    fs = fsspec.filesystem("s3", **s3_bucket.storage_options)
    data = bytes(range(256)) * 4000
    server.set_faults(fail_every=2, cut_every=3)
    for i in range(6):
        fs.pipe_file(f"{s3_bucket.name}/k{i}", data)
    for i in range(6):
        assert fs.cat_file(f"{s3_bucket.name}/k{i}") == data
    assert server.faults["503"] > 0 and server.faults["cut"] > 0
    assert s3_bucket.objects() == {f"k{i}": data for i in range(6)}
    counts = server.per_key()[f"{s3_bucket.name}/k1"]
    assert counts["requests"] > 2 and counts["sent"] > len(data)  # a cut GET was sent half, then again


def test_environment_alone_reaches_the_server(s3_bucket) -> None:
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.pipe_file(f"{s3_bucket.name}/x", b"abc")
    assert fs.cat_file(f"{s3_bucket.name}/x") == b"abc"
    assert s3_bucket.server.requests(f"{s3_bucket.name}/x", "PUT") == 1


def test_conditional_put_and_a_refusing_bucket(s3_bucket) -> None:
    import botocore.exceptions

    server = s3_bucket.server
    client = server.client()
    client.put_object(Bucket=s3_bucket.name, Key="m", Body=b"1", IfNoneMatch="*")
    with pytest.raises(botocore.exceptions.ClientError, match="PreconditionFailed"):
        client.put_object(Bucket=s3_bucket.name, Key="m", Body=b"2", IfNoneMatch="*")
    other = server.new_bucket("locked")
    with server.restricted(s3_bucket.name) as (key, secret):
        fs = fsspec.filesystem("s3", skip_instance_cache=True, **server.storage_options(key, secret))
        fs.pipe_file(f"{s3_bucket.name}/ok", b"1")
        with pytest.raises(PermissionError):
            fs.pipe_file(f"{other}/no", b"1")
