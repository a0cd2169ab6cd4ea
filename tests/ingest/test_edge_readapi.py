"""Read API: audiences with member counts, current members, a profile's audiences."""

from __future__ import annotations

import re
from urllib.parse import quote

import asyncpg
import pytest

from ingest.store import MEMBER_PAGE_SQL, PROFILE_AUDIENCES_SQL
from schemas.keys import DEFAULT_TENANT
from tests.support.edge import Client


async def audience(db: asyncpg.Pool, name: str, cleared_version: int = 0) -> int:
    audience_id: int = await db.fetchval(
        """INSERT INTO audiences (account_id, name, cleared_version) VALUES (1, $1, $2)
           RETURNING id""",
        name,
        cleared_version,
    )
    return audience_id


async def members(db: asyncpg.Pool, audience_id: int, rows: list[tuple[str, bool, int]]) -> None:
    await db.executemany(
        "INSERT INTO memberships (audience_id, profile_id, member, version) VALUES ($1,$2,$3,$4)",
        [(audience_id, p, m, v) for p, m, v in rows],
    )


@pytest.fixture
async def world(db: asyncpg.Pool) -> dict[str, int]:
    """Three live audiences and a deleted one, with members, tombstones and cleared rows."""
    a = await audience(db, "A", cleared_version=100)
    b = await audience(db, "B")
    c = await audience(db, "C")
    gone = await audience(db, "Gone")
    # In A: p3 is older than the clear, p4 a tombstone; p1, p2 and p5 count.
    await members(
        db, a, [("p2", True, 101), ("p1", True, 150), ("p3", True, 99), ("p4", False, 120)]
    )
    await members(db, a, [("p5", True, 100_000)])
    await members(db, b, [("p1", True, 1)])
    await members(db, gone, [("p1", True, 1)])
    await db.execute("UPDATE audiences SET deleted_at = now() WHERE id = $1", gone)
    return {"A": a, "B": b, "C": c, "Gone": gone}


async def test_audiences_paged_with_member_counts(client: Client, world: dict[str, int]) -> None:
    resp = await client.get("/v1/audiences?pageSize=2")
    assert resp.status == 200
    first = await resp.json()
    assert first["totalResultSize"] == 3
    assert first["hasMore"] is True
    assert [(x["id"], x["name"], x["membersCount"]) for x in first["data"]] == [
        (world["A"], "A", 3),
        (world["B"], "B", 1),
    ]
    assert set(first["data"][0]) == {"accountId", "id", "created", "name", "membersCount"}
    second = await (await client.get("/v1/audiences?pageSize=2&skip=2")).json()
    assert second["hasMore"] is False
    assert [(x["name"], x["membersCount"]) for x in second["data"]] == [("C", 0)]
    beyond = await (await client.get("/v1/audiences?skip=10")).json()
    assert beyond == {"totalResultSize": 3, "hasMore": False, "data": []}
    default = await (await client.get("/v1/audiences")).json()
    assert len(default["data"]) == 3


async def test_current_members_paged_by_profile_id(client: Client, world: dict[str, int]) -> None:
    path = f"/v1/audiences/{world['A']}/memberships"
    page = await (await client.get(path + "?pageSize=2")).json()
    assert page["totalResultSize"] == 3
    assert page["hasMore"] is True
    assert [m["profileIntegrationId"] for m in page["data"]] == ["p1", "p2"]
    assert all(m["updated"].endswith("Z") for m in page["data"])
    rest = await (await client.get(path + "?pageSize=2&skip=2")).json()
    assert [m["profileIntegrationId"] for m in rest["data"]] == ["p5"]
    assert rest["hasMore"] is False
    empty = await (await client.get(f"/v1/audiences/{world['C']}/memberships")).json()
    assert empty == {"totalResultSize": 0, "hasMore": False, "data": []}
    for missing in (world["Gone"], 987654):
        resp = await client.get(f"/v1/audiences/{missing}/memberships")
        assert resp.status == 404
        assert (await resp.json())["errors"][0]["source"] == {"parameter": "audienceId"}


async def test_profile_audiences(client: Client, world: dict[str, int]) -> None:
    p1 = await (await client.get("/v1/customer_profiles/p1/audiences")).json()
    assert p1 == {"data": [{"id": world["A"], "name": "A"}, {"id": world["B"], "name": "B"}]}
    for gone in ("p3", "p4", "nobody"):  # cleared, tombstone, unknown
        found = await (await client.get(f"/v1/customer_profiles/{gone}/audiences")).json()
        assert found == {"data": []}
    odd = await (await client.get("/v1/customer_profiles/a%2Fb%3Ac/audiences")).json()
    assert odd == {"data": []}
    resp = await client.get("/v1/customer_profiles/" + "x" * 1001 + "/audiences")
    assert resp.status == 400
    assert (await resp.json())["errors"][0]["source"] == {"parameter": "integrationId"}


async def test_profile_lookup_reads_the_profile_index(db: asyncpg.Pool) -> None:
    ids = [await audience(db, f"A{i}") for i in range(20)]
    await db.execute(
        """INSERT INTO memberships (audience_id, profile_id, member, version)
           SELECT a, 'user-' || n, true, 1
           FROM unnest($1::bigint[]) AS a, generate_series(1, 2000) AS n""",
        ids,
    )
    await db.execute("ANALYZE memberships")
    await db.execute("ANALYZE audiences")
    explained = await db.fetch("EXPLAIN " + PROFILE_AUDIENCES_SQL, "user-7", DEFAULT_TENANT)
    plan = "\n".join(r[0] for r in explained)
    assert "memberships_profile" in plan
    assert "Seq Scan on memberships" not in plan
    # The current_memberships view is inlined (no scan of it): readers keep the indexes.
    assert "current_memberships" not in plan
    plan = "\n".join(r[0] for r in await db.fetch("EXPLAIN " + MEMBER_PAGE_SQL, ids[3], 100, 0, ""))
    assert re.search(r"Index (Only )?Scan using memberships_\w+ on memberships", plan), plan
    assert "current_memberships" not in plan


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("pageSize=0", "pageSize"),
        ("pageSize=1001", "pageSize"),
        ("pageSize=ten", "pageSize"),
        ("pageSize=", "pageSize"),
        ("skip=-1", "skip"),
        ("skip=1.5", "skip"),
    ],
)
async def test_bad_query_parameters_are_400(client: Client, query: str, parameter: str) -> None:
    for path in ("/v1/audiences", "/v1/audiences/1/memberships"):
        resp = await client.get(f"{path}?{query}")
        assert resp.status == 400
        error = await resp.json()
        assert error["StatusCode"] == 400
        assert error["errors"][0]["source"] == {"parameter": parameter}


async def test_the_longest_profile_id_fits_in_a_request_line(client: Client) -> None:
    # 1000 characters of 4 UTF-8 bytes: 12,000 bytes percent-encoded, past aiohttp's default.
    profile_id = "\U0001f600" * 1000
    response = await client.get(f"/v1/customer_profiles/{quote(profile_id)}/audiences")
    assert response.status == 200
    assert await response.json() == {"data": []}


async def read_by_cursor(client: Client, path: str, page_size: int) -> list[list[str]]:
    """Every page from the first by the cursor: the profile ids (or audience names) of each."""
    pages = []
    params = {"pageSize": str(page_size)}
    while True:
        resp = await client.get(path, params=params)
        assert resp.status == 200, await resp.text()
        page = await resp.json()
        pages.append([x.get("profileIntegrationId", x.get("name")) for x in page["data"]])
        if not page["hasMore"]:
            return pages
        params = {"pageSize": str(page_size), "cursor": page["cursor"]}


async def test_member_pages_by_cursor_skip_and_repeat_no_one(
    client: Client, db: asyncpg.Pool
) -> None:
    a = await audience(db, "A", cleared_version=100)
    # Current members between tombstones and rows the clear superseded, ids that sort oddly.
    profiles = [f"user-{n}" for n in range(57)] + ["a b", "é", "Z", "user-1 ", "\U0001f600"]
    await members(db, a, [(p, True, 101 + n) for n, p in enumerate(profiles)])
    await members(db, a, [(f"old-{n}", n % 2 == 0, 50 + n * 10) for n in range(20)])
    # Members (even n) newer than the clear (version 101 and up: n >= 6) are current.
    expected = [*profiles, *(f"old-{n}" for n in range(6, 20, 2))]
    for size in (1, 7, 62, 1000):
        pages = await read_by_cursor(client, f"/v1/audiences/{a}/memberships", size)
        read = [p for page in pages for p in page]
        assert sorted(read) == sorted(expected), size
        assert len(read) == len(set(read))
        assert all(len(page) == size for page in pages[:-1])

    # Members added and removed between pages: those present throughout are read exactly once.
    path = f"/v1/audiences/{a}/memberships"
    first = await (await client.get(path, params={"pageSize": "10"})).json()
    await members(db, a, [("aaa-new-before", True, 500), ("zzz-new-after", True, 501)])
    await db.execute(
        "UPDATE memberships SET member = false WHERE audience_id = $1 AND profile_id = 'Z'", a
    )
    rest = []
    cursor = first["cursor"]
    while cursor:
        page = await (await client.get(path, params={"pageSize": "10", "cursor": cursor})).json()
        rest += [m["profileIntegrationId"] for m in page["data"]]
        cursor = page.get("cursor") if page["hasMore"] else None
    read = [m["profileIntegrationId"] for m in first["data"]] + rest
    assert len(read) == len(set(read))
    assert "zzz-new-after" in read
    assert "aaa-new-before" not in read
    assert set(profiles) - {"Z"} <= set(read)


async def test_audience_pages_by_cursor(
    client: Client, db: asyncpg.Pool, world: dict[str, int]
) -> None:
    # After the deleted audience: the cursor walks past it.
    for name in ("D", "E"):
        await audience(db, name)
    pages = await read_by_cursor(client, "/v1/audiences", 2)
    assert pages == [["A", "B"], ["C", "D"], ["E"]]
    first = await (await client.get("/v1/audiences", params={"pageSize": "4"})).json()
    after = await (
        await client.get("/v1/audiences", params={"pageSize": "4", "cursor": first["cursor"]})
    ).json()
    assert after["totalResultSize"] == 5
    assert [(x["name"], x["membersCount"]) for x in after["data"]] == [("E", 0)]
    assert after["hasMore"] is False
    # A skip page carries a cursor too; an empty page none.
    skipped = await (await client.get("/v1/audiences", params={"skip": "1"})).json()
    assert [x["name"] for x in skipped["data"]] == ["B", "C", "D", "E"]
    assert "cursor" in skipped
    assert "cursor" not in await (await client.get("/v1/audiences?skip=10")).json()


async def test_bad_cursors_are_400_and_name_the_parameter(
    client: Client, world: dict[str, int]
) -> None:
    a, b = world["A"], world["B"]
    members_a = (await (await client.get(f"/v1/audiences/{a}/memberships?pageSize=1")).json())[
        "cursor"
    ]
    audiences = (await (await client.get("/v1/audiences?pageSize=1")).json())["cursor"]
    bad = [
        (f"/v1/audiences/{b}/memberships", members_a),  # another audience's
        (f"/v1/audiences/{a}/memberships", audiences),  # the audiences list's
        ("/v1/audiences", members_a),
        ("/v1/audiences", "not-a-cursor"),
        ("/v1/audiences", ""),
        ("/v1/audiences", "%%%"),
        ("/v1/audiences", audiences[:-2]),
        (f"/v1/audiences/{a}/memberships", "kQ"),
        (f"/v1/audiences/{a}/memberships", "x" * 3000),
    ]
    for path, cursor in bad:
        resp = await client.get(path, params={"cursor": cursor})
        assert resp.status == 400, (path, cursor)
        error = await resp.json()
        assert error["StatusCode"] == 400
        assert error["errors"][0]["source"] == {"parameter": "cursor"}
    both = await client.get("/v1/audiences", params={"cursor": audiences, "skip": "1"})
    assert both.status == 400
    assert (await both.json())["errors"][0]["source"] == {"parameter": "cursor"}
