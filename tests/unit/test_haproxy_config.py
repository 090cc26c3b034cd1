from harness.stack.haproxy import render_config


def test_sessions_stick_to_the_instance_that_issued_them() -> None:
    config = render_config(9000, [9001, 9002], "/healthz")
    assert "bind 127.0.0.1:9000" in config
    assert "stick store-response res.hdr(mcp-session-id)" in config
    assert "stick on req.hdr(mcp-session-id)" in config
    assert "server s0 127.0.0.1:9001 check" in config and "server s1 127.0.0.1:9002 check" in config
    assert "option httpchk GET /healthz" in config
    assert "option redispatch" in config
    assert "httpchk" not in render_config(9000, [9001], None)
