//! Every HTTP endpoint in one table ([`ROUTES`]), and which listener serves which.
//!
//! The table is the one place a route is declared: the router is built from it, the OpenAPI
//! test checks it against `docs/openapi.yaml` (a route the spec lacks, or a spec path with no
//! route, fails), and `ADMIN_LISTEN_ADDR` splits it by [`Surface`].

use hyper::Method;

use crate::auth::ServiceScope;

/// An endpoint, as the dispatcher sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Upgrade,
    Publish,
    PublishBatch,
    Live,
    Ready,
    Health,
    Metrics,
    Stats,
    Presence,
    Channels,
    History,
    Disconnect,
    OpenApi,
    Demo,
    DemoClient,
}

/// Which listener an endpoint is on when `ADMIN_LISTEN_ADDR` is set (without it, one listener
/// serves everything).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    /// What browsers and backends reach: WebSockets, publishing, the demo page.
    Public,
    /// What operators reach: metrics, stats, health, the admin API, presence, the spec.
    Admin,
    /// Probes, on both.
    Both,
}

/// A listener's share of the routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// `LISTEN_ADDR` without an admin listener: every route.
    All,
    /// `LISTEN_ADDR` beside an admin listener.
    Public,
    /// `ADMIN_LISTEN_ADDR`.
    Admin,
}

impl Listener {
    pub fn serves(self, s: Surface) -> bool {
        match self {
            Listener::All => true,
            Listener::Public => s != Surface::Admin,
            Listener::Admin => s != Surface::Public,
        }
    }
}

pub struct RouteSpec {
    /// matchit syntax: `{name}` is one path segment.
    pub path: &'static str,
    pub method: Method,
    pub route: Route,
    pub surface: Surface,
    /// The service scope the endpoint's token needs (`wsgate checktoken` lists them from
    /// here); `None`: no service token (a user token, or none).
    pub scope: Option<ServiceScope>,
}

const fn r(
    path: &'static str,
    method: Method,
    route: Route,
    surface: Surface,
    scope: Option<ServiceScope>,
) -> RouteSpec {
    RouteSpec { path, method, route, surface, scope }
}

/// No service token: a user token (the upgrade) or none.
const OPEN: Option<ServiceScope> = None;
const PUBLISH: Option<ServiceScope> = Some(ServiceScope::Publish);
const ADMIN: Option<ServiceScope> = Some(ServiceScope::Admin);

/// Every endpoint. GET routes answer HEAD too.
pub const ROUTES: &[RouteSpec] = &[
    r("/ws/tasks", Method::GET, Route::Upgrade, Surface::Public, OPEN),
    r("/ws", Method::GET, Route::Upgrade, Surface::Public, OPEN),
    r("/api/events", Method::POST, Route::Publish, Surface::Public, PUBLISH),
    r("/api/events/batch", Method::POST, Route::PublishBatch, Surface::Public, PUBLISH),
    r("/live", Method::GET, Route::Live, Surface::Both, OPEN),
    r("/ready", Method::GET, Route::Ready, Surface::Both, OPEN),
    r("/health", Method::GET, Route::Health, Surface::Admin, OPEN),
    r("/metrics", Method::GET, Route::Metrics, Surface::Admin, OPEN),
    r("/ws/stats", Method::GET, Route::Stats, Surface::Admin, OPEN),
    r("/api/channels", Method::GET, Route::Channels, Surface::Admin, ADMIN),
    r("/api/channels/{name}/presence", Method::GET, Route::Presence, Surface::Admin, PUBLISH),
    r("/api/history", Method::GET, Route::History, Surface::Admin, ADMIN),
    r("/api/users/{sub}/disconnect", Method::POST, Route::Disconnect, Surface::Admin, ADMIN),
    r("/api/openapi.json", Method::GET, Route::OpenApi, Surface::Admin, OPEN),
    r("/demo", Method::GET, Route::Demo, Surface::Public, OPEN),
    r("/demo/", Method::GET, Route::Demo, Surface::Public, OPEN),
    r("/demo/wsgate.js", Method::GET, Route::DemoClient, Surface::Public, OPEN),
];

/// `METHOD /path` of every endpoint a service token needs `scope` for, in table order.
pub fn endpoints_needing(scope: ServiceScope) -> Vec<String> {
    ROUTES.iter().filter(|r| r.scope == Some(scope)).map(|r| format!("{} {}", r.method, r.path)).collect()
}

/// The routes one listener serves.
pub struct Router {
    inner: matchit::Router<&'static RouteSpec>,
}

/// What a request path resolved to.
pub enum Resolved<'r, 'p> {
    Found(&'static RouteSpec, matchit::Params<'r, 'p>),
    /// The path exists here, but not for this method: the methods it takes.
    WrongMethod(&'static str),
    NotFound,
}

impl Router {
    /// `demo`: whether the demo page is served (`DEMO_PAGE`).
    pub fn new(listener: Listener, demo: bool) -> Router {
        let mut inner = matchit::Router::new();
        for spec in ROUTES {
            let is_demo = matches!(spec.route, Route::Demo | Route::DemoClient);
            if listener.serves(spec.surface) && (demo || !is_demo) {
                inner.insert(spec.path, spec).expect("the route table has no conflicting paths");
            }
        }
        Router { inner }
    }

    pub fn resolve<'r, 'p>(&'r self, method: &Method, path: &'p str) -> Resolved<'r, 'p> {
        let Ok(m) = self.inner.at(path) else { return Resolved::NotFound };
        let spec: &'static RouteSpec = m.value;
        // HEAD is answered wherever GET is (hyper leaves the body out); uptime checks use it.
        if *method == spec.method || (spec.method == Method::GET && *method == Method::HEAD) {
            Resolved::Found(spec, m.params)
        } else if spec.method == Method::GET {
            Resolved::WrongMethod("GET, HEAD")
        } else {
            Resolved::WrongMethod("POST")
        }
    }
}

/// `%XX` escapes of a path segment decoded; an invalid one is kept as is (and then fails the
/// name's validation).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(r: &Router, method: Method, path: &str) -> Option<Route> {
        match r.resolve(&method, path) {
            Resolved::Found(spec, _) => Some(spec.route),
            _ => None,
        }
    }

    #[test]
    fn every_route_resolves_and_params_are_segments() {
        let all = Router::new(Listener::All, true);
        for spec in ROUTES {
            let path = spec.path.replace("{name}", "room:1").replace("{sub}", "alice");
            assert_eq!(route(&all, spec.method.clone(), &path), Some(spec.route), "{}", spec.path);
        }
        let Resolved::Found(_, params) = all.resolve(&Method::POST, "/api/users/a%2Fb/disconnect") else { panic!() };
        assert_eq!(percent_decode(params.get("sub").unwrap()), "a/b");
        assert!(matches!(all.resolve(&Method::GET, "/api/users/a/b/disconnect"), Resolved::NotFound));
        assert!(matches!(all.resolve(&Method::DELETE, "/api/events"), Resolved::WrongMethod("POST")));
        assert!(matches!(all.resolve(&Method::POST, "/live"), Resolved::WrongMethod("GET, HEAD")));
        assert_eq!(route(&all, Method::HEAD, "/live"), Some(Route::Live));
        assert!(matches!(all.resolve(&Method::GET, "/nope"), Resolved::NotFound));
    }

    #[test]
    fn listeners_split_the_routes() {
        let public = Router::new(Listener::Public, false);
        let admin = Router::new(Listener::Admin, false);
        assert_eq!(route(&public, Method::GET, "/ws/tasks"), Some(Route::Upgrade));
        assert_eq!(route(&public, Method::GET, "/metrics"), None);
        assert_eq!(route(&public, Method::GET, "/demo"), None, "demo off");
        assert_eq!(route(&admin, Method::GET, "/metrics"), Some(Route::Metrics));
        assert_eq!(route(&admin, Method::POST, "/api/events"), None);
        for probe in ["/live", "/ready"] {
            assert!(route(&public, Method::GET, probe).is_some() && route(&admin, Method::GET, probe).is_some());
        }
    }

    #[test]
    fn the_openapi_spec_describes_every_route_and_nothing_else() {
        let spec: serde_json::Value = serde_json::from_str(super::super::ops::OPENAPI_JSON).unwrap();
        assert_eq!(spec["info"]["version"], env!("CARGO_PKG_VERSION"), "the spec's version is the crate's");
        let mut in_spec: Vec<(String, String)> = Vec::new();
        for (path, ops) in spec["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                in_spec.push((path.clone(), method.to_uppercase()));
            }
        }
        let mut routed: Vec<(String, String)> =
            ROUTES.iter().map(|r| (r.path.to_string(), r.method.as_str().to_string())).collect();
        in_spec.sort();
        routed.sort();
        let missing: Vec<_> = routed.iter().filter(|r| !in_spec.contains(r)).collect();
        let extra: Vec<_> = in_spec.iter().filter(|r| !routed.contains(r)).collect();
        assert!(missing.is_empty(), "routes docs/openapi.yaml lacks: {missing:?}");
        assert!(extra.is_empty(), "docs/openapi.yaml paths with no route: {extra:?}");
        // The scope each route needs is the one the spec declares (`serviceToken: [scope]`).
        for route in ROUTES {
            let op = &spec["paths"][route.path][route.method.as_str().to_lowercase()];
            let declared: Vec<&str> = op["security"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.get("serviceToken"))
                .flat_map(|scopes| scopes.as_array().cloned().unwrap_or_default())
                .filter_map(|v| v.as_str().map(str::to_owned))
                .map(|s| match s.as_str() {
                    "publish" => "publish",
                    "admin" => "admin",
                    _ => "other",
                })
                .collect();
            let want: Vec<&str> = route.scope.map(|s| s.name()).into_iter().collect();
            assert_eq!(declared, want, "{} {}: scope in the spec vs the route table", route.method, route.path);
        }
    }

    #[test]
    fn percent_escapes() {
        assert_eq!(percent_decode("room%3A1"), "room:1");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
        assert_eq!(percent_decode("%"), "%");
    }
}
