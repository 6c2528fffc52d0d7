//! Models from the lake's registry, served to a job's SQL (`[[models]]` in the spec): the
//! promoted champion as `function(...)` and, for shadow scoring, the challenger as
//! `function_challenger(...)`. A background task looks for a newly promoted version every
//! `refresh` and swaps it in; the next batch scores with it, and its `model_version` says so.
//!
//! A job's SQL fixes the features it passes, so a new version must read the same features in
//! the same order; one that does not is refused (logged) and the old version keeps serving.

use std::sync::Arc;

use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::SessionContext;
use riskstream_lake::{LakeLocation, ModelRegistry, ModelRole};
use riskstream_udfs::model::{
    MANIFEST_FILE, ModelManifest, ModelSlot, ModelUdf, ScoringModel, load_folder,
};

use crate::error::{JobError, Result};
use crate::stream::spec::ModelBinding;

/// Where model changes are logged; shown by default, since which version scores is what an
/// auditor asks first.
pub const LOG_TARGET: &str = "riskstream::models";

/// How the served version reads while the spec's `default` folder scores: no registry version
/// has that name.
const DEFAULT_PREFIX: &str = "default:";

/// The suffix of the shadow function's name.
pub const CHALLENGER_SUFFIX: &str = "_challenger";

/// One promoted role of a model and the slot its function reads.
struct Served {
    slot: Arc<ModelSlot>,
    /// The version in the slot.
    version: String,
}

/// A model binding while the job runs.
pub struct ServedModel {
    binding: ModelBinding,
    registry: ModelRegistry,
    champion: Served,
    challenger: Option<Served>,
}

/// Reads `version` of `name` from the registry and builds it.
async fn load(
    registry: &ModelRegistry,
    binding: &ModelBinding,
    version: &str,
) -> Result<ScoringModel> {
    let files = registry.read_version(&binding.name, version).await?;
    let bad = |reason: String| JobError::config(format!("{}.name", binding.key), reason);
    let manifest = files
        .get(MANIFEST_FILE)
        .ok_or_else(|| bad(format!("{}/{version} has no {MANIFEST_FILE}", binding.name)))?;
    let manifest = ModelManifest::from_json(manifest).map_err(|e| bad(e.to_string()))?;
    manifest
        .load(|file| {
            files
                .get(file)
                .cloned()
                .ok_or_else(|| format!("{file} is missing"))
        })
        .map_err(|e| bad(format!("{}/{version}: {e}", binding.name)))
}

impl ServedModel {
    /// Loads the promoted versions of `binding` and registers their functions in `ctx`. With no
    /// champion the binding's `default` folder serves; without one either, it is a
    /// configuration error: the job's SQL cannot be planned without the function.
    pub async fn start(binding: &ModelBinding, ctx: &SessionContext) -> Result<Self> {
        // With a default model a fresh lake is fine (the job is about to create it); without
        // one the registry must be there.
        let lake = match binding.default {
            Some(_) => LakeLocation::parse(&binding.lake),
            None => LakeLocation::open_existing(&binding.lake),
        }
        .map_err(|e| JobError::config(format!("{}.lake", binding.key), e.to_string()))?;
        let registry = ModelRegistry::new(&lake)?;
        let (model, version) = match (
            registry
                .promoted(&binding.name, ModelRole::Champion)
                .await?,
            &binding.default,
        ) {
            (Some(version), _) => (load(&registry, binding, &version).await?, version),
            // Served until a champion is promoted, which then replaces it like any new version.
            (None, Some(dir)) => {
                let model = load_folder(dir).map_err(|e| {
                    JobError::config(format!("{}.default", binding.key), e.to_string())
                })?;
                let version = format!("{DEFAULT_PREFIX}{}", model.version());
                (model, version)
            }
            (None, None) => {
                return Err(JobError::config(
                    format!("{}.name", binding.key),
                    format!(
                        "model `{}` has no champion in {lake} (riskstream model promote --lake {lake} {} VERSION)",
                        binding.name, binding.name
                    ),
                ));
            }
        };
        let champion = Served {
            slot: ModelSlot::new(model.clone()),
            version: version.clone(),
        };
        ctx.register_udf(ScalarUDF::new_from_impl(ModelUdf::new(
            &binding.function,
            Arc::clone(&champion.slot),
            binding.explain_from,
        )));
        let challenger = if binding.shadow {
            // Without a challenger the shadow column repeats the champion, so the SQL always plans.
            let (model, version) = match registry
                .promoted(&binding.name, ModelRole::Challenger)
                .await?
            {
                Some(v) => (load(&registry, binding, &v).await?, v),
                None => (model, version),
            };
            let served = Served {
                slot: ModelSlot::new(model),
                version,
            };
            ctx.register_udf(ScalarUDF::new_from_impl(ModelUdf::new(
                format!("{}{CHALLENGER_SUFFIX}", binding.function),
                Arc::clone(&served.slot),
                binding.explain_from,
            )));
            Some(served)
        } else {
            None
        };
        tracing::info!(target: LOG_TARGET, model = %binding.name, champion = %champion.version,
            challenger = challenger.as_ref().map(|c| c.version.as_str()), "serving model as {}()", binding.function);
        Ok(Self {
            binding: binding.clone(),
            registry,
            champion,
            challenger,
        })
    }

    /// The versions now served: champion, and challenger when shadowing.
    pub fn versions(&self) -> (&str, Option<&str>) {
        (
            &self.champion.version,
            self.challenger.as_ref().map(|c| c.version.as_str()),
        )
    }

    /// Looks for newly promoted versions and swaps them in. Returns whether anything changed;
    /// a version that cannot be served is an error, after the other role was still looked at.
    pub async fn refresh(&mut self) -> Result<bool> {
        let champion = self
            .registry
            .promoted(&self.binding.name, ModelRole::Champion)
            .await?;
        let champion_swap = match &champion {
            Some(v) => self.swap(ModelRole::Champion, v).await,
            None => Ok(false),
        };
        let mut challenger_swap = Ok(false);
        if self.challenger.is_some() {
            let challenger = self
                .registry
                .promoted(&self.binding.name, ModelRole::Challenger)
                .await?
                .or(champion);
            if let Some(v) = challenger {
                challenger_swap = self.swap(ModelRole::Challenger, &v).await;
            }
        }
        Ok(champion_swap? | challenger_swap?)
    }

    /// The served slot of `role` (none for the challenger without shadow scoring).
    fn served(&mut self, role: ModelRole) -> Option<&mut Served> {
        match role {
            ModelRole::Champion => Some(&mut self.champion),
            ModelRole::Challenger => self.challenger.as_mut(),
        }
    }

    async fn swap(&mut self, role: ModelRole, version: &str) -> Result<bool> {
        let current = match self.served(role) {
            Some(served) if served.version != version => served.slot.get(),
            _ => return Ok(false),
        };
        let model = load(&self.registry, &self.binding, version).await?;
        if model.features() != current.features() {
            return Err(JobError::config(
                format!("{}.name", self.binding.key),
                format!(
                    "{}/{version} reads features [{}] but the job's SQL passes [{}]; it is not served",
                    self.binding.name,
                    model.features().join(", "),
                    current.features().join(", ")
                ),
            ));
        }
        let name = self.binding.name.clone();
        let Some(served) = self.served(role) else {
            return Ok(false);
        };
        served.slot.replace(model);
        tracing::info!(target: LOG_TARGET, model = %name, role = role.name(), from = %served.version, to = %version, "new model version served");
        served.version = version.to_string();
        Ok(true)
    }
}

/// Every model of a job, refreshed in the background until dropped.
pub struct ServedModels {
    refreshers: Vec<tokio::task::JoinHandle<()>>,
}

impl ServedModels {
    /// Serves `bindings` into `ctx` and starts their refreshers.
    pub async fn start(bindings: &[ModelBinding], ctx: &SessionContext) -> Result<Self> {
        let mut refreshers = Vec::new();
        for binding in bindings {
            let mut served = ServedModel::start(binding, ctx).await?;
            let every = binding.refresh;
            refreshers.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    // A registry that cannot be read now is retried at the next tick; the
                    // served version keeps scoring meanwhile.
                    if let Err(e) = served.refresh().await {
                        tracing::warn!(target: LOG_TARGET, model = %served.binding.name, "model refresh: {e}");
                    }
                }
            }));
        }
        Ok(Self { refreshers })
    }
}

impl Drop for ServedModels {
    fn drop(&mut self) {
        for r in &self.refreshers {
            r.abort();
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
pub(crate) mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::time::Duration;

    use datafusion::arrow::array::AsArray;
    use riskstream_udfs::model::{BoostParams, FeatureMatrix, ModelPart, train_binary};

    use super::*;

    /// The files of a model folder `tx/<version>`: a small GBDT over `features` (label: the
    /// first feature above 0.5).
    fn model_files(version: &str, features: &[&str], rounds: usize) -> BTreeMap<String, Vec<u8>> {
        let width = features.len();
        let mut state = 17u64;
        let mut values = Vec::new();
        let mut labels = Vec::new();
        for _ in 0..400 {
            for _ in 0..width {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                values.push((state >> 40) as f32 / (1u64 << 24) as f32);
            }
            labels.push(if values[values.len() - width] > 0.5 {
                1.0
            } else {
                0.0
            });
        }
        let names: Vec<String> = features.iter().map(|f| f.to_string()).collect();
        let rows = FeatureMatrix::from_rows(values, width).unwrap();
        let params = BoostParams {
            rounds,
            max_depth: 3,
            ..BoostParams::default()
        };
        let gbdt = train_binary(&names, &rows, &labels, None, &params).unwrap();
        let manifest = ModelManifest {
            name: "tx".into(),
            version: version.into(),
            created_at: "2026-11-29T00:00:00Z".into(),
            features: names,
            gbdt: Some(ModelPart {
                file: "gbdt.json".into(),
                weight: 1.0,
            }),
            isolation_forest: None,
            top_features: 2,
            training: serde_json::Value::Null,
            metrics: serde_json::Value::Null,
        };
        BTreeMap::from([
            ("gbdt.json".to_string(), gbdt.into_bytes()),
            (MANIFEST_FILE.to_string(), manifest.to_json().into_bytes()),
        ])
    }

    /// Trains a small GBDT over `features` (see [`model_files`]) and publishes it as
    /// `tx/<version>` in the lake at `dir`.
    pub(crate) async fn publish_model(dir: &Path, version: &str, features: &[&str], rounds: usize) {
        let files = model_files(version, features, rounds);
        let lake = LakeLocation::parse(dir.to_str().unwrap()).unwrap();
        ModelRegistry::new(&lake)
            .unwrap()
            .publish("tx", version, &files)
            .await
            .unwrap();
    }

    pub(crate) async fn promote(dir: &Path, version: &str, role: ModelRole) {
        let lake = LakeLocation::parse(dir.to_str().unwrap()).unwrap();
        ModelRegistry::new(&lake)
            .unwrap()
            .promote("tx", version, role)
            .await
            .unwrap();
    }

    fn binding(dir: &Path, shadow: bool) -> ModelBinding {
        ModelBinding {
            function: "fraud".into(),
            lake: dir.display().to_string(),
            name: "tx".into(),
            refresh: Duration::from_secs(30),
            shadow,
            explain_from: 0.0,
            default: None,
            key: "models[0]".into(),
        }
    }

    async fn versions(ctx: &SessionContext) -> (String, String) {
        let out = ctx
            .sql(
                "SELECT fraud(a, b)['model_version'], fraud_challenger(a, b)['model_version'] \
                 FROM (VALUES (0.2, 0.9)) AS t(a, b)",
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = |c: usize| out[0].column(c).as_string::<i32>().value(0).to_string();
        (text(0), text(1))
    }

    #[tokio::test]
    async fn promoted_versions_swap_in_and_mismatched_features_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = SessionContext::new();
        let err = ServedModel::start(&binding(dir.path(), true), &ctx)
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("no champion"), "{err}");

        publish_model(dir.path(), "1", &["a", "b"], 5).await;
        publish_model(dir.path(), "2", &["a", "b"], 8).await;
        publish_model(dir.path(), "3", &["b", "a"], 5).await;
        promote(dir.path(), "1", ModelRole::Champion).await;
        let mut served = ServedModel::start(&binding(dir.path(), true), &ctx)
            .await
            .unwrap();
        // No challenger yet: the shadow function scores with the champion.
        assert_eq!(versions(&ctx).await, ("tx/1".into(), "tx/1".into()));
        assert!(!served.refresh().await.unwrap(), "nothing promoted since");

        promote(dir.path(), "2", ModelRole::Challenger).await;
        assert!(served.refresh().await.unwrap());
        assert_eq!(versions(&ctx).await, ("tx/1".into(), "tx/2".into()));
        promote(dir.path(), "2", ModelRole::Champion).await;
        served.refresh().await.unwrap();
        assert_eq!(served.versions(), ("2", Some("2")));
        assert_eq!(versions(&ctx).await, ("tx/2".into(), "tx/2".into()));

        // Version 3 reads the features in another order than the SQL passes them.
        promote(dir.path(), "3", ModelRole::Champion).await;
        let err = served.refresh().await.unwrap_err().to_string();
        assert!(err.contains("[b, a]") && err.contains("[a, b]"), "{err}");
        assert_eq!(
            versions(&ctx).await.0,
            "tx/2",
            "the old version keeps serving"
        );
    }

    #[tokio::test]
    async fn a_default_folder_serves_until_a_champion_is_promoted() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("shipped");
        std::fs::create_dir(&folder).unwrap();
        for (file, bytes) in model_files("0", &["a", "b"], 5) {
            std::fs::write(folder.join(file), bytes).unwrap();
        }
        let lake = dir.path().join("lake");
        let mut binding = binding(&lake, false);
        binding.default = Some(folder);
        let ctx = SessionContext::new();
        let mut served = ServedModel::start(&binding, &ctx).await.unwrap();
        assert_eq!(served.versions(), ("default:tx/0", None));
        assert!(!served.refresh().await.unwrap(), "no champion yet");

        publish_model(&lake, "1", &["a", "b"], 5).await;
        promote(&lake, "1", ModelRole::Champion).await;
        assert!(served.refresh().await.unwrap());
        assert_eq!(served.versions(), ("1", None));
        let out = ctx
            .sql("SELECT fraud(a, b)['model_version'] FROM (VALUES (0.2, 0.9)) AS t(a, b)")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(out[0].column(0).as_string::<i32>().value(0), "tx/1");
    }
}
