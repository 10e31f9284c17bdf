"""What the store can say about the files of a folder without sending them: sizes and ETags.

A stored model is checked where its bytes are. On s3:// one listing (ListObjectsV2: a request per
1,000 files) gives every file's size and ETag, the store's own fingerprint of the object's content
(the MD5 of its bytes for a plain upload, of its parts for a multipart one): an object overwritten
since, even with bytes of the same size, has another ETag. `Store.publish_model` records each
file's ETag in the model's marker as it publishes; a check compares a listing with the marker,
and a download records the ETags it was made from. Neither sends a byte of the model.

Other object stores (gs://), and s3:// without boto3 (``pip install mlit[s3]``), list sizes only
(ETag None): there a same-size change is found by hashing a download (`mlit store verify`).
"""

from __future__ import annotations

import functools
import os

Listing = dict[str, tuple[int, "str | None"]]  # relative path -> (size, ETag or None)


def listing(uri: str) -> Listing:
    """Every file under the folder ``uri`` (a URI on object storage): its size and ETag."""
    if uri.startswith("s3://"):
        try:
            return _s3_listing(uri)
        except ImportError:  # boto3 is the `s3` extra: sizes through pyarrow below
            pass
    return _sizes(uri)


def _client():
    return _client_for(os.environ.get("AWS_ENDPOINT_URL"), os.environ.get("AWS_DEFAULT_REGION"))


@functools.cache
def _client_for(endpoint: str | None, region: str | None):
    import boto3

    # One client per endpoint (a MinIO or moto server, as pyarrow honours it in the store).
    return boto3.client("s3", endpoint_url=endpoint, region_name=region)


def _s3_listing(uri: str) -> Listing:
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    prefix = prefix.rstrip("/") + "/"
    out: Listing = {}
    pages = _client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        for obj in page.get("Contents", ()):
            rel = obj["Key"][len(prefix) :]
            if rel and not rel.endswith("/"):  # not a folder's marker object
                out[rel] = (obj["Size"], obj["ETag"].strip('"'))
    return out


def _sizes(uri: str) -> Listing:
    from pyarrow import fs

    from mlit.store.filesystems import filesystem

    filesystem_, base = filesystem(uri)
    selector = fs.FileSelector(base, recursive=True, allow_not_found=True)
    base = base.rstrip("/") + "/"
    return {
        info.path[len(base) :]: (info.size, None)
        for info in filesystem_.get_file_info(selector)
        if info.type == fs.FileType.File
    }


def problem(files: dict[str, dict], listed: Listing) -> str | None:
    """What is wrong with the listed files against a model's manifest (size, and ETag where the
    manifest recorded one at publication), or None."""
    for rel, want in files.items():
        if rel not in listed:
            return f"{rel} is missing"
        size, etag = listed[rel]
        if size != want["size"]:
            return f"{rel} is {size} bytes, {want['size']} expected (truncated?)"
        if want.get("etag") and etag != want["etag"]:
            return (
                f"{rel} changed since it was published (its ETag is {etag}, {want['etag']} "
                "when published): overwritten or damaged"
            )
    return None


def vouched(files: dict[str, dict], listed: Listing) -> bool:
    """Whether the store vouches for every file's content: an ETag recorded at publication for
    each, and the same ETag listed now."""
    return bool(files) and all(
        want.get("etag") and listed.get(rel, (None, None))[1] == want["etag"]
        for rel, want in files.items()
    )
