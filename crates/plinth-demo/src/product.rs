//! The fictional product, "Hatchboard", a dashboards-and-insights SaaS app: its sites,
//! pages, acquisition channels, audience, features and plans, with the weights and rates
//! that shape the simulated behaviour.
//!
//! Every string here is a fixed literal, so events carry `&'static str`s and the per-event
//! work is copying, not allocating names.

pub(crate) const MARKETING_HOST: &str = "www.hatchboard.example";
pub(crate) const APP_HOST: &str = "app.hatchboard.example";

/// How a visitor first arrived. `utm` is (source, medium, campaign) when the link carried
/// campaign parameters.
pub(crate) struct Acquisition {
    pub utm: Option<(&'static str, &'static str, &'static str)>,
    /// `$referrer`; "$direct" when there is none, as posthog-js records it.
    pub referrer: &'static str,
    pub referring_domain: &'static str,
    pub weight: u32,
    /// Multiplies the base sign-up probability: paid search converts better than social.
    pub signup_factor: f64,
}

#[rustfmt::skip]
pub(crate) const ACQUISITIONS: &[Acquisition] = &[
    Acquisition { utm: None, referrer: "$direct", referring_domain: "$direct", weight: 28, signup_factor: 1.0 },
    Acquisition { utm: None, referrer: "https://www.google.com/", referring_domain: "www.google.com", weight: 17, signup_factor: 0.9 },
    Acquisition { utm: Some(("google", "cpc", "brand-search")), referrer: "https://www.google.com/", referring_domain: "www.google.com", weight: 15, signup_factor: 1.35 },
    Acquisition { utm: Some(("newsletter", "email", "weekly-digest")), referrer: "$direct", referring_domain: "$direct", weight: 8, signup_factor: 1.2 },
    Acquisition { utm: Some(("linkedin", "social", "b2b-awareness")), referrer: "https://www.linkedin.com/", referring_domain: "www.linkedin.com", weight: 7, signup_factor: 0.85 },
    Acquisition { utm: Some(("twitter", "social", "launch-thread")), referrer: "https://t.co/", referring_domain: "t.co", weight: 7, signup_factor: 0.65 },
    Acquisition { utm: Some(("github", "referral", "readme-badge")), referrer: "https://github.com/", referring_domain: "github.com", weight: 6, signup_factor: 1.15 },
    Acquisition { utm: Some(("producthunt", "referral", "launch-day")), referrer: "https://www.producthunt.com/", referring_domain: "www.producthunt.com", weight: 5, signup_factor: 0.8 },
    Acquisition { utm: Some(("partner", "affiliate", "agency-program")), referrer: "https://partners.example/", referring_domain: "partners.example", weight: 4, signup_factor: 1.25 },
    Acquisition { utm: None, referrer: "https://duckduckgo.com/", referring_domain: "duckduckgo.com", weight: 3, signup_factor: 0.95 },
];

/// A device class with the (os, browser, weight) combinations seen on it.
pub(crate) struct Device {
    pub device_type: &'static str,
    pub weight: u32,
    pub signup_factor: f64,
    pub platforms: &'static [(&'static str, &'static str, u32)],
}

pub(crate) const DEVICES: &[Device] = &[
    Device {
        device_type: "Desktop",
        weight: 60,
        signup_factor: 1.2,
        platforms: &[
            ("Mac OS X", "Chrome", 25),
            ("Mac OS X", "Safari", 12),
            ("Windows", "Chrome", 30),
            ("Windows", "Microsoft Edge", 12),
            ("Windows", "Firefox", 6),
            ("Linux", "Chrome", 8),
            ("Linux", "Firefox", 4),
        ],
    },
    Device {
        device_type: "Mobile",
        weight: 33,
        signup_factor: 0.6,
        platforms: &[
            ("iOS", "Mobile Safari", 45),
            ("Android", "Chrome", 40),
            ("Android", "Samsung Internet", 10),
            ("iOS", "Chrome iOS", 5),
        ],
    },
    Device {
        device_type: "Tablet",
        weight: 7,
        signup_factor: 0.8,
        platforms: &[("iOS", "Mobile Safari", 70), ("Android", "Chrome", 30)],
    },
];

/// ISO 3166-1 alpha-2 codes, as `$geoip_country_code` holds them, with weights.
pub(crate) const COUNTRIES: &[(&str, u32)] = &[
    ("US", 34),
    ("GB", 9),
    ("DE", 8),
    ("IN", 8),
    ("FR", 5),
    ("BR", 5),
    ("CA", 5),
    ("NL", 3),
    ("AU", 3),
    ("ES", 3),
    ("JP", 3),
    ("PL", 3),
    ("SE", 2),
    ("SG", 2),
    ("MX", 2),
    ("IT", 2),
    ("NG", 1),
    ("ZA", 1),
    ("KR", 1),
    ("CH", 1),
];

/// Marketing pages a visitor browses before (or without) signing up.
pub(crate) const MARKETING_PAGES: &[(&str, u32)] = &[
    ("/pricing", 30),
    ("/docs", 18),
    ("/docs/getting-started", 12),
    ("/customers", 10),
    ("/features/funnels", 10),
    ("/features/experiments", 8),
    ("/blog/product-analytics-guide", 7),
    ("/changelog", 5),
];

/// Pages of the app visited by signed-up users who have not activated.
pub(crate) const ONBOARDING_PAGES: &[(&str, u32)] = &[
    ("/home", 50),
    ("/onboarding", 35),
    ("/docs/getting-started", 15),
];

pub(crate) struct CompanySize {
    pub label: &'static str,
    pub weight: u32,
    /// Probability that a control-group user of this size activates.
    pub activation: f64,
    /// Daily probability that an active free user of this size starts checkout.
    pub upgrade: f64,
    pub plan: Plan,
}

#[rustfmt::skip]
pub(crate) const COMPANY_SIZES: &[CompanySize] = &[
    CompanySize { label: "1-10", weight: 36, activation: 0.34, upgrade: 0.026, plan: PRO },
    CompanySize { label: "11-50", weight: 30, activation: 0.40, upgrade: 0.034, plan: PRO },
    CompanySize { label: "51-200", weight: 19, activation: 0.45, upgrade: 0.042, plan: BUSINESS },
    CompanySize { label: "201-1000", weight: 10, activation: 0.43, upgrade: 0.047, plan: BUSINESS },
    CompanySize { label: "1000+", weight: 5, activation: 0.38, upgrade: 0.052, plan: BUSINESS },
];

#[derive(Clone, Copy)]
pub(crate) struct Plan {
    pub name: &'static str,
    pub monthly_usd: i64,
    pub annual_usd: i64,
}

pub(crate) const PRO: Plan = Plan {
    name: "pro",
    monthly_usd: 49,
    annual_usd: 490,
};
pub(crate) const BUSINESS: Plan = Plan {
    name: "business",
    monthly_usd: 199,
    annual_usd: 1990,
};

pub(crate) const ROLES: &[(&str, u32)] = &[
    ("engineer", 30),
    ("product manager", 25),
    ("data analyst", 18),
    ("founder", 15),
    ("marketer", 8),
    ("designer", 4),
];

pub(crate) const SIGNUP_METHODS: &[(&str, u32)] = &[("email", 50), ("google", 35), ("github", 15)];

pub(crate) const FIRST_NAMES: &[&str] = &[
    "ada",
    "alan",
    "grace",
    "linus",
    "margaret",
    "ken",
    "barbara",
    "dennis",
    "frances",
    "john",
    "radia",
    "edsger",
    "sophie",
    "tim",
    "hedy",
    "donald",
    "katherine",
    "guido",
    "anita",
    "niklaus",
];

pub(crate) const LAST_NAMES: &[&str] = &[
    "lovelace", "turing", "hopper", "torvalds", "hamilton", "thompson", "liskov", "ritchie",
    "allen", "backus", "perlman", "dijkstra", "wilson", "berners", "lamarr", "knuth", "johnson",
    "rossum", "borg", "wirth",
];

/// Fictional companies; emails use the reserved `.example` top-level domain.
pub(crate) const COMPANIES: &[&str] = &[
    "acme",
    "globex",
    "initech",
    "umbrella",
    "hooli",
    "vandelay",
    "wonka",
    "tyrell",
    "soylent",
    "cyberdyne",
    "gringotts",
    "oscorp",
    "monarch",
    "aperture",
    "massive-dynamic",
    "pied-piper",
    "dunder-mifflin",
    "prestige",
    "stark-logistics",
    "blue-sun",
    "nakatomi",
    "duff",
    "bluth",
    "sterling-cooper",
    "wayne-analytics",
    "kramerica",
    "octan",
    "virtucon",
    "zorg",
    "tessier",
];

/// The onboarding checklist: step number is the position plus one.
pub(crate) const ONBOARDING_STEPS: &[&str] = &["profile", "connect data source", "invite team"];

pub(crate) const PROJECT_TYPES: &[(&str, u32)] = &[("web", 55), ("mobile", 25), ("backend", 20)];

/// A feature-use event with the app page it happens on and one categorical detail.
pub(crate) struct Feature {
    pub event: &'static str,
    pub path: &'static str,
    pub weight: u32,
    pub detail_key: &'static str,
    pub detail_values: &'static [&'static str],
}

#[rustfmt::skip]
pub(crate) const FEATURES: &[Feature] = &[
    Feature { event: "insight viewed", path: "/insights", weight: 30, detail_key: "insight_type", detail_values: &["trends", "funnels", "retention", "paths", "stickiness"] },
    Feature { event: "dashboard viewed", path: "/dashboards", weight: 26, detail_key: "dashboard_kind", detail_values: &["team", "personal", "shared", "template"] },
    Feature { event: "query run", path: "/sql", weight: 14, detail_key: "source", detail_values: &["editor", "notebook", "api"] },
    Feature { event: "insight created", path: "/insights/new", weight: 10, detail_key: "insight_type", detail_values: &["trends", "funnels", "retention", "paths", "stickiness"] },
    Feature { event: "report exported", path: "/dashboards", weight: 5, detail_key: "format", detail_values: &["csv", "png", "pdf"] },
    Feature { event: "dashboard created", path: "/dashboards/new", weight: 4, detail_key: "dashboard_kind", detail_values: &["team", "personal", "shared", "template"] },
    Feature { event: "comment added", path: "/insights", weight: 4, detail_key: "target", detail_values: &["insight", "dashboard"] },
    Feature { event: "invite sent", path: "/settings/team", weight: 3, detail_key: "invitee_role", detail_values: &["viewer", "analyst", "admin"] },
    Feature { event: "alert created", path: "/alerts/new", weight: 3, detail_key: "channel", detail_values: &["email", "slack", "webhook"] },
];

pub(crate) const CHURN_REASONS: &[(&str, u32)] = &[
    ("too expensive", 35),
    ("missing feature", 25),
    ("switched tool", 20),
    ("project ended", 20),
];

/// Relative share of sessions starting in each UTC hour: an audience in the Americas and
/// Europe, quiet at night in both.
pub(crate) const HOUR_WEIGHTS: [f64; 24] = [
    2.0, 1.5, 1.2, 1.0, 1.0, 1.2, 1.8, 2.6, 3.6, 4.4, 5.0, 5.2, 5.2, 5.4, 5.8, 6.0, 5.8, 5.2, 4.6,
    4.0, 3.6, 3.2, 2.8, 2.4,
];
