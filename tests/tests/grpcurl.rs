//! An operator's view with the real grpcurl: reflection lists the services
//! with no proto files at hand, the assignment and health answer.

use std::process::Command;
use std::time::{Duration, Instant};

use e2e::*;

fn grpcurl(args: &[&str]) -> String {
    let out = Command::new("grpcurl")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "grpcurl is not installed ({e}); deploy/local/test.sh installs it, or: \
                 go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3"
            )
        });
    assert!(
        out.status.success(),
        "grpcurl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn grpcurl_lists_services_and_shows_the_assignment() {
    let mut p = Pipeline::start("e2e-grpcurl", 3);
    p.start_worker("w1");
    let addr = format!("127.0.0.1:{}", p.port);

    let list = grpcurl(&["-plaintext", &addr, "list"]);
    for service in [
        "cyberday.v1.Admin",
        "cyberday.v1.Coordinator",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            list.lines().any(|l| l == service),
            "{service} not in:\n{list}"
        );
    }
    let described = grpcurl(&["-plaintext", &addr, "describe", "cyberday.v1.Admin"]);
    assert!(described.contains("rpc ListAssignments"), "{described}");

    // Wait until w1 holds all three partitions, then read them with grpcurl.
    let deadline = Instant::now() + Duration::from_secs(20);
    let json = loop {
        let out = grpcurl(&["-plaintext", &addr, "cyberday.v1.Admin/ListAssignments"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let owned = v["assignments"]
            .as_array()
            .map(|a| a.iter().filter(|x| x["owner"] == "w1").count())
            .unwrap_or(0);
        if owned == 3 {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "w1 never got 3 partitions: {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(json["topic"], p.topic.as_str());

    let health = grpcurl(&["-plaintext", &addr, "grpc.health.v1.Health/Check"]);
    assert!(health.contains("SERVING"), "{health}");
    let stats = grpcurl(&["-plaintext", &addr, "cyberday.v1.Admin/GetStats"]);
    assert!(stats.contains("partitions"), "{stats}");
    p.stop();
}
