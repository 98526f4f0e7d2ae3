//! Which nodes a command runs, and what each waits for.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use plinth_pipelines::{CompiledProject, NodeId, ResourceType};

/// The commands that run nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Seeds, models, snapshots and tests, published together.
    Build,
    /// Models only.
    Run,
    /// Data tests only, against production.
    Test,
    /// Seeds only.
    Seed,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Build => "build",
            Command::Run => "run",
            Command::Test => "test",
            Command::Seed => "seed",
        }
    }

    fn runs(self, resource_type: ResourceType) -> bool {
        match self {
            Command::Build => true,
            Command::Run => resource_type == ResourceType::Model,
            Command::Test => resource_type == ResourceType::Test,
            Command::Seed => resource_type == ResourceType::Seed,
        }
    }
}

/// The nodes (and unit tests) to run, and what each waits for.
pub(crate) struct Plan {
    pub nodes: Vec<NodeId>,
    pub deps: BTreeMap<NodeId, Vec<NodeId>>,
}

impl Plan {
    pub fn new(compiled: &CompiledProject, selected: &BTreeSet<NodeId>, command: Command) -> Plan {
        let runs = |id: &NodeId| {
            let node = &compiled.nodes[id];
            selected.contains(id) && !node.is_ephemeral() && command.runs(node.node.resource_type)
        };
        let nodes: Vec<NodeId> = compiled
            .order
            .iter()
            .filter(|id| runs(id))
            .cloned()
            .collect();
        let in_plan: BTreeSet<&NodeId> = nodes.iter().collect();

        // Node parents, looking through ephemeral models (they are inlined,
        // so their own parents are what a node really reads).
        let mut built_parents: HashMap<&NodeId, BTreeSet<&NodeId>> = HashMap::new();
        for id in &compiled.order {
            let mut parents = BTreeSet::new();
            for parent in compiled.nodes[id].node.depends_on() {
                let Some(parent_node) = compiled.nodes.get(parent) else {
                    continue;
                };
                if parent_node.is_ephemeral() {
                    parents.extend(built_parents[parent].iter().copied());
                } else {
                    parents.insert(parent);
                }
            }
            built_parents.insert(id, parents);
        }
        // Strict ancestors, in the same terms.
        let mut ancestors: HashMap<&NodeId, BTreeSet<&NodeId>> = HashMap::new();
        for id in &compiled.order {
            let mut all = BTreeSet::new();
            for parent in &built_parents[id] {
                all.insert(*parent);
                all.extend(ancestors[parent].iter().copied());
            }
            ancestors.insert(id, all);
        }

        let tests: Vec<&NodeId> = nodes
            .iter()
            .filter(|id| compiled.nodes[*id].node.resource_type == ResourceType::Test)
            .collect();
        let mut deps: BTreeMap<NodeId, Vec<NodeId>> = BTreeMap::new();
        for id in &nodes {
            let mut wait: BTreeSet<&NodeId> = built_parents[id]
                .iter()
                .copied()
                .filter(|p| in_plan.contains(p))
                .collect();
            if command == Command::Build
                && compiled.nodes[id].node.resource_type != ResourceType::Test
            {
                // dbt build: a node waits for the tests of what it reads, when
                // those tests read only its ancestors.
                for test in &tests {
                    let parents = &built_parents[*test];
                    if !parents.is_empty() && parents.iter().all(|p| ancestors[id].contains(p)) {
                        wait.insert(test);
                    }
                }
            }
            deps.insert(id.clone(), wait.into_iter().cloned().collect());
        }
        // Unit tests run once their model's inputs are built, and before it.
        let mut nodes = nodes;
        if matches!(command, Command::Build | Command::Test) {
            for unit in compiled.unit_tests.values() {
                if !selected.contains(&unit.model) {
                    continue;
                }
                let inputs = match deps.get(&unit.model) {
                    Some(model_deps) => model_deps.clone(),
                    None => Vec::new(),
                };
                if let Some(model_deps) = deps.get_mut(&unit.model) {
                    model_deps.push(unit.unique_id.clone());
                }
                deps.insert(unit.unique_id.clone(), inputs);
                nodes.push(unit.unique_id.clone());
            }
        }
        Plan { nodes, deps }
    }
}
