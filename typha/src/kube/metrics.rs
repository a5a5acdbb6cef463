//! `typha_k8s_*`: the Kubernetes watchers' metrics, labelled by kind.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The `kind` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

/// The watchers' metrics; cloning shares them.
#[derive(Debug, Clone, Default)]
pub struct KubeMetrics {
    pub objects: Family<KindLabel, Gauge>,
    pub watch_restarts: Family<KindLabel, Counter>,
    pub relists: Family<KindLabel, Counter>,
    pub conversion_errors: Family<KindLabel, Counter>,
    pub batches: Family<KindLabel, Counter>,
}

impl KubeMetrics {
    /// Registers the metrics under the `typha_k8s_` prefix.
    pub fn register(registry: &mut Registry) -> KubeMetrics {
        let m = KubeMetrics::default();
        let r = registry.sub_registry_with_prefix("typha_k8s");
        r.register(
            "objects",
            "Objects of the kind the API server has, as the watcher last saw them",
            m.objects.clone(),
        );
        r.register(
            "watch_restarts",
            "Watch or list errors after which the watcher started again",
            m.watch_restarts.clone(),
        );
        r.register("relists", "Lists after the first one", m.relists.clone());
        r.register(
            "conversion_errors",
            "Objects skipped because they could not be converted",
            m.conversion_errors.clone(),
        );
        r.register(
            "batches",
            "Batches of puts and deletes proposed to Raft",
            m.batches.clone(),
        );
        m
    }

    pub fn kind(kind: &str) -> KindLabel {
        KindLabel {
            kind: kind.to_string(),
        }
    }
}
