//! The etcdctl session the auth test runs against etcd and raftkv alike.

use super::*;

/// One pass against `urls` (three members).
pub(crate) async fn session(urls: &[String]) -> Vec<String> {
    let mut seen = Vec::new();
    let mut run = |what: &str, url: &str, args: &[&str]| seen.push(observe(urls, what, url, args));
    let root = ["--user", "root:rootpw"];
    let alice = ["--user", "alice:alicepw"];
    let with = |user: &[&'static str; 2], args: &[&'static str]| -> Vec<&'static str> {
        user.iter().chain(args).copied().collect()
    };
    run("enable without root", &urls[0], &["auth", "enable"]);
    run("add root", &urls[0], &["user", "add", "root:rootpw"]);
    run("enable", &urls[1], &["auth", "enable"]);
    run("enable again", &urls[1], &with(&root, &["auth", "enable"]));
    run("get without credentials", &urls[0], &["get", "k"]);
    run("root puts", &urls[2], &with(&root, &["put", "/app/w", "1"]));
    run("bad password", &urls[0], &["--user", "root:nope", "get", "k"]);
    run("unknown user", &urls[0], &["--user", "bob:pw", "get", "k"]);
    run(
        "add alice",
        &urls[0],
        &with(&root, &["user", "add", "alice:alicepw"]),
    );
    run(
        "add alice again",
        &urls[0],
        &with(&root, &["user", "add", "alice:x"]),
    );
    run("add reader", &urls[1], &with(&root, &["role", "add", "reader"]));
    run(
        "reader reads /app/",
        &urls[1],
        &with(
            &root,
            &["role", "grant-permission", "reader", "read", "/app/", "--prefix"],
        ),
    );
    run("add writer", &urls[1], &with(&root, &["role", "add", "writer"]));
    run(
        "writer writes /app/w",
        &urls[2],
        &with(
            &root,
            &["role", "grant-permission", "writer", "readwrite", "/app/w"],
        ),
    );
    run(
        "writer writes from /z on",
        &urls[2],
        &with(
            &root,
            &["role", "grant-permission", "writer", "write", "/z", "--from-key"],
        ),
    );
    run(
        "grant reader",
        &urls[0],
        &with(&root, &["user", "grant-role", "alice", "reader"]),
    );
    run(
        "grant writer",
        &urls[0],
        &with(&root, &["user", "grant-role", "alice", "writer"]),
    );
    run(
        "grant a missing role",
        &urls[0],
        &with(&root, &["user", "grant-role", "alice", "nope"]),
    );
    run(
        "alice puts /app/w",
        &urls[1],
        &with(&alice, &["put", "/app/w", "2"]),
    );
    run(
        "alice puts /app/x",
        &urls[1],
        &with(&alice, &["put", "/app/x", "2"]),
    );
    run("alice puts /zz", &urls[1], &with(&alice, &["put", "/zz", "2"]));
    run("alice reads /zz", &urls[1], &with(&alice, &["get", "/zz"]));
    run(
        "alice reads /app/",
        &urls[2],
        &with(&alice, &["get", "/app/", "--prefix"]),
    );
    run(
        "alice reads everything",
        &urls[2],
        &with(&alice, &["get", "", "--from-key"]),
    );
    run(
        "alice deletes /app/",
        &urls[2],
        &with(&alice, &["del", "/app/", "--prefix"]),
    );
    run(
        "alice gets herself",
        &urls[0],
        &with(&alice, &["user", "get", "alice"]),
    );
    run(
        "alice gets root",
        &urls[0],
        &with(&alice, &["user", "get", "root"]),
    );
    run(
        "alice gets her role",
        &urls[0],
        &with(&alice, &["role", "get", "reader"]),
    );
    run("alice lists users", &urls[0], &with(&alice, &["user", "list"]));
    run("root lists users", &urls[0], &with(&root, &["user", "list"]));
    run("root lists roles", &urls[0], &with(&root, &["role", "list"]));
    run(
        "root gets writer",
        &urls[0],
        &with(&root, &["role", "get", "writer"]),
    );
    run("alice compacts", &urls[0], &with(&alice, &["compact", "1"]));
    run("alice defragments", &urls[0], &with(&alice, &["defrag"]));
    run("alice hashes", &urls[0], &with(&alice, &["endpoint", "hashkv"]));
    run(
        "alice adds a member",
        &urls[0],
        &with(&alice, &["member", "add", "x", "--peer-urls=http://127.0.0.1:9"]),
    );
    run(
        "a member added without credentials",
        &urls[1],
        &["member", "add", "x", "--peer-urls=http://127.0.0.1:9"],
    );
    run(
        "alice promotes a member",
        &urls[0],
        &with(&alice, &["member", "promote", "1"]),
    );
    run("delete root", &urls[0], &with(&root, &["user", "delete", "root"]));
    run(
        "delete the root role",
        &urls[0],
        &with(&root, &["role", "delete", "root"]),
    );
    run(
        "revoke root from root",
        &urls[0],
        &with(&root, &["user", "revoke-role", "root", "root"]),
    );
    run(
        "revoke a permission not granted",
        &urls[0],
        &with(&root, &["role", "revoke-permission", "writer", "/nope"]),
    );
    run(
        "revoke writer",
        &urls[2],
        &with(&root, &["user", "revoke-role", "alice", "writer"]),
    );
    run(
        "revoke writer again",
        &urls[2],
        &with(&root, &["user", "revoke-role", "alice", "writer"]),
    );
    run(
        "alice puts /app/w revoked",
        &urls[1],
        &with(&alice, &["put", "/app/w", "3"]),
    );
    run(
        "alice changes password",
        &urls[0],
        &with(&root, &["user", "passwd", "alice", "--interactive=false"]),
    );
    seen.extend(grpc_session(urls).await);

    let mut run = |what: &str, url: &str, args: &[&str]| seen.push(observe(urls, what, url, args));
    run(
        "delete reader",
        &urls[0],
        &with(&root, &["role", "delete", "reader"]),
    );
    run("alice's roles", &urls[0], &with(&root, &["user", "get", "alice"]));
    run(
        "delete alice",
        &urls[0],
        &with(&root, &["user", "delete", "alice"]),
    );
    run("disable", &urls[1], &with(&root, &["auth", "disable"]));
    run("get without credentials", &urls[2], &["get", "/app/w"]);
    run("root after disable", &urls[2], &with(&root, &["get", "/app/w"]));
    seen
}

/// Run etcdctl against `url`: whether it succeeded and its output, or its error (the
/// last line of stderr; the lines before are client logs), with the member addresses,
/// which differ between runs, named by position.
pub(crate) fn observe(urls: &[String], what: &str, url: &str, args: &[&str]) -> String {
    let (ok, out, err) = etcdctl(url, args);
    let shown = if ok {
        out.trim().replace('\n', " | ")
    } else {
        err.trim().lines().last().unwrap_or_default().to_string()
    };
    urls.iter()
        .enumerate()
        .fold(format!("{what}: {ok}, {shown}"), |text, (i, url)| {
            text.replace(url.trim_start_matches("http://"), &format!("<member {i}>"))
        })
}
