//! The model registry on a local lake: versions written once and whole, promotion only of
//! published versions, pointers read back.

#![expect(clippy::unwrap_used)]

use std::collections::BTreeMap;

use riskstream_lake::{LakeLocation, ModelRegistry, ModelRole};

fn files(tag: &str) -> BTreeMap<String, Vec<u8>> {
    BTreeMap::from([
        (
            "model.json".to_string(),
            format!("{{\"tag\": \"{tag}\"}}").into_bytes(),
        ),
        ("gbdt.json".to_string(), b"{}".to_vec()),
    ])
}

async fn promoted(registry: &ModelRegistry, role: ModelRole) -> Option<String> {
    registry.promoted("tx", role).await.unwrap()
}

#[tokio::test]
async fn versions_are_written_once_and_promoted_by_pointer() {
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeLocation::parse(dir.path().to_str().unwrap()).unwrap();
    let registry = ModelRegistry::new(&lake).unwrap();
    assert!(registry.names().await.unwrap().is_empty());
    assert_eq!(promoted(&registry, ModelRole::Champion).await, None);

    for v in ["2", "10", "1"] {
        registry.publish("tx", v, &files(v)).await.unwrap();
    }
    assert_eq!(registry.names().await.unwrap(), ["tx"]);
    assert_eq!(
        registry.versions("tx").await.unwrap(),
        ["1", "2", "10"],
        "numeric order"
    );
    let again = registry
        .publish("tx", "2", &files("other"))
        .await
        .unwrap_err();
    assert!(again.to_string().contains("already published"), "{again}");
    assert_eq!(registry.read_version("tx", "2").await.unwrap(), files("2"));
    // Version 1's folder is a prefix of version 10's name, not of its files.
    assert_eq!(registry.read_version("tx", "1").await.unwrap(), files("1"));
    assert_eq!(
        registry.read_file("tx", "10", "model.json").await.unwrap(),
        files("10")["model.json"]
    );

    // A folder without model.json (a publisher that died half way) is not a version.
    std::fs::create_dir_all(dir.path().join("models/tx/3")).unwrap();
    std::fs::write(dir.path().join("models/tx/3/gbdt.json"), b"{}").unwrap();
    assert_eq!(registry.versions("tx").await.unwrap(), ["1", "2", "10"]);
    let err = registry
        .promote("tx", "3", ModelRole::Champion)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("unpublished") && err.to_string().contains("1, 2, 10"),
        "{err}"
    );

    registry
        .promote("tx", "2", ModelRole::Champion)
        .await
        .unwrap();
    registry
        .promote("tx", "10", ModelRole::Challenger)
        .await
        .unwrap();
    assert_eq!(
        promoted(&registry, ModelRole::Champion).await.as_deref(),
        Some("2")
    );
    registry
        .promote("tx", "10", ModelRole::Champion)
        .await
        .unwrap();
    assert_eq!(
        promoted(&registry, ModelRole::Champion).await.as_deref(),
        Some("10")
    );
    assert_eq!(
        promoted(&registry, ModelRole::Challenger).await.as_deref(),
        Some("10")
    );

    let missing = BTreeMap::from([("gbdt.json".to_string(), b"{}".to_vec())]);
    assert!(
        registry
            .publish("tx", "4", &missing)
            .await
            .unwrap_err()
            .to_string()
            .contains("model.json")
    );
    assert!(registry.publish("../etc", "1", &files("x")).await.is_err());
    assert!(
        registry
            .read_version("tx", "7")
            .await
            .unwrap_err()
            .to_string()
            .contains("no such version")
    );
}
