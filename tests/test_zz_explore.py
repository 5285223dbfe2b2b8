import json, uuid
async def test_explore(deployment, fake_llm):
    m = uuid.uuid4().hex[:8]
    async with deployment.http("alice") as c:
        r = await c.post("/v1/chat/completions", json={"model": "assistant", "messages": [{"role": "system", "content": f"SYS-{m}"}, {"role": "user", "content": f"one-{m}"}]}, headers={"X-Conversation-ID": f"c-{m}"})
        print(r.status_code, r.headers, r.json())
        r = await c.post("/v1/chat/completions", json={"model": "assistant", "messages": [{"role": "system", "content": f"SYS-{m}"}, {"role": "user", "content": f"two-{m}"}]}, headers={"X-Conversation-ID": f"c-{m}"})
        print(r.json())
        r = await c.post("/v1/chat/completions", json={"model": "assistant", "messages": [{"role": "user", "content": f"### Task: title {m}"}]}, headers={"X-Conversation-ID": f"c-{m}"})
        print(r.status_code, r.headers, r.json())
    for req in fake_llm.requests:
        if m in json.dumps(req):
            print(json.dumps(req["messages"]))
    print(await deployment.messages("alice", f"c-{m}"))
    print(await deployment.query("select * from runs order by created_at desc limit 3"))
