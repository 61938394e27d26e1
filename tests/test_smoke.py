"""End-to-end smoke: the transcript of the README works over real HTTP."""


def test_create_post_read(api, make_token):
    coord = make_token("coord", "coordinator")
    rev = make_token("rev")
    thread = api.ok("create_thread", coord, title="Review", type="workflow", participants=["rev", "exec"])
    posted = api.ok("post_message", rev, thread_id=thread["thread_id"], schema_version=1, kind="chat", body="hello")
    assert posted["seq"] == 1
    read = api.ok("read_messages", coord, thread_id=thread["thread_id"])
    assert [m["body"] for m in read["messages"]] == ["hello"]
    assert read["messages"][0]["sender_agent_id"] == "rev"
