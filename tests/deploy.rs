//! The deployment guide shows the configuration files the tests run (docs/deploy.md and
//! deploy/): a block that names a file must be that file, exactly.

#[test]
fn the_guide_shows_the_tested_configuration_files() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let guide = std::fs::read_to_string(root.join("docs/deploy.md")).unwrap();
    let mut shown = Vec::new();
    for block in guide.split("```").skip(1).step_by(2) {
        // After the fence's language tag, a block whose first line is `# deploy/FILE...`.
        let body = block.split_once('\n').map_or("", |(_, body)| body);
        let Some(name) = body.strip_prefix("# deploy/").and_then(|rest| rest.split(':').next()) else { continue };
        let file =
            std::fs::read_to_string(root.join("deploy").join(name)).unwrap_or_else(|e| panic!("deploy/{name}: {e}"));
        assert_eq!(body, file, "docs/deploy.md shows deploy/{name} differently");
        shown.push(name.to_owned());
    }
    shown.sort();
    assert_eq!(shown, ["duo.service", "haproxy-duo.cfg", "nginx-duo.conf", "turnserver.conf"]);
}

#[test]
fn the_systemd_unit_is_one_systemd_accepts() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // As installed, but with the binary where this build put it (verify checks it exists).
    let unit = std::fs::read_to_string(root.join("deploy/duo.service")).unwrap();
    assert!(unit.contains("ExecStart=/opt/duo/duo "));
    let dir = std::env::temp_dir().join(format!("duo-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("duo.service");
    std::fs::write(&path, unit.replace("/opt/duo/duo ", &format!("{} ", env!("CARGO_BIN_EXE_duo")))).unwrap();
    let verified = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd, installed by scripts/setup.sh)");
    std::fs::remove_dir_all(&dir).unwrap();
    let complaints = String::from_utf8_lossy(&verified.stderr);
    assert!(verified.status.success() && complaints.trim().is_empty(), "{complaints}");
}
