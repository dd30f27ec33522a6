//! The process's registry of per-method counters: every service a server hosts or a client
//! calls, registered once, so that every series exists (at zero) from startup and the hot
//! path holds `&'static` handles instead of looking anything up.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Mutex, OnceLock, RwLock};

use super::method::{MethodMetrics, ServiceMetrics};
use super::process::process;
use crate::service::{MethodDescriptor, ServiceDescriptor};

/// Every service registered in this process, by full name, in registration order.
struct Registry {
    services: Mutex<Vec<&'static ServiceMetrics>>,
    /// Methods by full name, for calls made without a generated client.
    methods: RwLock<HashMap<&'static str, &'static MethodMetrics>>,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        process();
        Registry {
            services: Mutex::new(Vec::new()),
            methods: RwLock::new(HashMap::new()),
        }
    })
}

/// The counters of `service`, made on first use. They live as long as the process, as a
/// Prometheus series does: the set of services compiled into a program is fixed, so this
/// holds a bounded amount of memory.
///
/// Two versions of one service's generated code can meet in one program (a test of both, a
/// relay built with an old copy). Generated code indexes counters by its own method list, so
/// each version gets a [`ServiceMetrics`] of its own, whose methods share the counters of
/// the same methods in the earlier version: one series per method, every method exported.
fn register(service: &'static ServiceDescriptor) -> &'static ServiceMetrics {
    let registry = registry();
    let mut services = registry.services.lock().unwrap_or_else(|e| e.into_inner());
    let earlier = services
        .iter()
        .rev()
        .find(|s| s.descriptor.name == service.name)
        .copied();
    if let Some(found) = earlier {
        let same_methods = found.descriptor.methods.len() == service.methods.len()
            && found
                .descriptor
                .methods
                .iter()
                .zip(service.methods)
                .all(|(a, b)| a.id == b.id && a.full_name == b.full_name);
        if same_methods {
            return found;
        }
    }
    let metrics: &'static ServiceMetrics =
        Box::leak(Box::new(ServiceMetrics::new(service, earlier)));
    services.push(metrics);
    let mut methods = registry.methods.write().unwrap_or_else(|e| e.into_inner());
    for m in metrics.methods.iter() {
        methods.entry(m.descriptor.full_name).or_insert(m);
    }
    metrics
}

/// Marks a service (and its earlier versions, which share counters with it) as served or
/// called, so that exposition shows those sides.
fn mark(
    metrics: &'static ServiceMetrics,
    flag: fn(&ServiceMetrics) -> &std::sync::atomic::AtomicBool,
) {
    for m in std::iter::successors(Some(metrics), |m| m.earlier) {
        flag(m).store(true, Relaxed);
    }
}

/// Registers a service a server in this process hosts.
pub fn register_server(service: &'static ServiceDescriptor) -> &'static ServiceMetrics {
    let metrics = register(service);
    mark(metrics, |m| &m.served);
    metrics
}

/// Registers a service a client in this process calls (generated clients do, when made).
pub fn register_client(service: &'static ServiceDescriptor) -> &'static ServiceMetrics {
    let metrics = register(service);
    mark(metrics, |m| &m.called);
    metrics
}

/// The counters of a method whose service was registered (by full name); for calls that do
/// not come through a generated client.
pub fn find_method(method: &MethodDescriptor) -> Option<&'static MethodMetrics> {
    let methods = registry().methods.read().unwrap_or_else(|e| e.into_inner());
    methods.get(method.full_name).copied()
}

/// Every registered service, in registration order.
pub fn services() -> Vec<&'static ServiceMetrics> {
    registry()
        .services
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}
