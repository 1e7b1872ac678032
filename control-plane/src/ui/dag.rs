//! A workflow's DAG laid out for drawing as SVG on the server (no chart runtime in the page):
//! each task in the column of its longest chain of dependencies, in topological order down the
//! column, an edge from each dependency's right side to the task's left. Pure: the template
//! (`dag.html`) draws what this decides.

use std::collections::HashMap;

use meridian_domain::workflow::{TaskKind, TaskSpec, WorkflowDefinition};

/// A task's box: 176 × 44, columns 232 apart, rows 64 apart, 16 of margin.
const WIDTH: u32 = 176;
const HEIGHT: u32 = 44;
const COLUMN: u32 = 232;
const ROW: u32 = 64;
const MARGIN: u32 = 16;

/// One task's box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    /// `shell`, `http` or `noop`.
    pub kind: &'static str,
    pub x: u32,
    pub y: u32,
    /// A state to colour the box by (a class name: `succeeded`, `not-started`; empty: a
    /// definition, not a run), and how it reads (`not started: upstream failed`).
    pub state: String,
    pub state_text: String,
}

/// One dependency: the SVG path from `from`'s right side to `to`'s left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub path: String,
}

/// The drawing: its size, boxes and edges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dag {
    pub width: u32,
    pub height: u32,
    pub box_width: u32,
    pub box_height: u32,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

/// The name of a task's kind, as written in a definition.
pub fn kind_name(kind: &TaskKind) -> &'static str {
    match kind {
        TaskKind::Shell { .. } => "shell",
        TaskKind::Http { .. } => "http",
        TaskKind::Noop {} => "noop",
    }
}

/// Lays `definition` out. A definition that does not validate (a cycle, a missing dependency)
/// cannot be stored, so this only meets valid ones; it still draws whatever it is given, a
/// task in a cycle in column 0.
pub fn layout(definition: &WorkflowDefinition) -> Dag {
    let order: Vec<&str> = definition
        .topological_order()
        .unwrap_or_else(|_| definition.tasks.iter().map(|t| t.name.as_str()).collect());
    let by_name: HashMap<&str, &TaskSpec> = definition
        .tasks
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    // Column: the length of the longest chain of dependencies before the task.
    let mut column: HashMap<&str, u32> = HashMap::new();
    for name in &order {
        let c = by_name[name]
            .depends_on
            .iter()
            .filter_map(|d| column.get(d.as_str()))
            .map(|c| c + 1)
            .max()
            .unwrap_or(0);
        column.insert(name, c);
    }
    let mut rows: HashMap<u32, u32> = HashMap::new();
    let mut at: HashMap<&str, (u32, u32)> = HashMap::new();
    let mut nodes = Vec::with_capacity(order.len());
    for name in &order {
        let c = column[name];
        let row = rows.entry(c).or_default();
        let (x, y) = (MARGIN + c * COLUMN, MARGIN + *row * ROW);
        *row += 1;
        at.insert(name, (x, y));
        nodes.push(Node {
            name: (*name).to_owned(),
            kind: kind_name(&by_name[name].kind),
            x,
            y,
            state: String::new(),
            state_text: String::new(),
        });
    }
    let mut edges = Vec::new();
    for name in &order {
        let (x2, y2) = at[name];
        for dep in &by_name[name].depends_on {
            let Some(&(x1, y1)) = at.get(dep.as_str()) else {
                continue;
            };
            let (sx, sy) = (x1 + WIDTH, y1 + HEIGHT / 2);
            let (ex, ey) = (x2, y2 + HEIGHT / 2);
            let path = if x2 - x1 > COLUMN {
                // Past a column: bowed under the boxes between, not through them.
                let (bx, by) = (sy.max(ey) + HEIGHT, COLUMN / 4);
                format!("M{sx},{sy} C{},{bx} {},{bx} {ex},{ey}", sx + by, ex - by)
            } else {
                let mid = (sx + ex) / 2;
                format!("M{sx},{sy} C{mid},{sy} {mid},{ey} {ex},{ey}")
            };
            edges.push(Edge {
                from: dep.clone(),
                to: (*name).to_owned(),
                path,
            });
        }
    }
    let columns = column.values().max().map_or(0, |c| c + 1);
    let most_rows = rows.values().max().copied().unwrap_or(0);
    // Room under the last row for an edge bowed under it.
    let bowed = edges.iter().any(|e| {
        let x = |n: &str| at.get(n).map_or(0, |p| p.0);
        x(&e.to) - x(&e.from) > COLUMN
    });
    Dag {
        width: 2 * MARGIN + columns.saturating_sub(1) * COLUMN + WIDTH * u32::from(columns > 0),
        height: 2 * MARGIN
            + most_rows.saturating_sub(1) * ROW
            + HEIGHT * u32::from(most_rows > 0)
            + (HEIGHT / 2) * u32::from(bowed),
        box_width: WIDTH,
        box_height: HEIGHT,
        nodes,
        edges,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(name: &str, deps: &[&str]) -> TaskSpec {
        let mut t = WorkflowDefinition::shell(name, "true").tasks.remove(0);
        t.depends_on = deps.iter().map(|d| (*d).to_owned()).collect();
        t
    }

    #[test]
    fn each_task_sits_one_column_after_its_latest_dependency() {
        // extract → (clean, load) → report; report also needs extract directly.
        let def = WorkflowDefinition {
            tasks: vec![
                task("report", &["load", "extract"]),
                task("load", &["clean"]),
                task("clean", &["extract"]),
                task("extract", &[]),
            ],
        };
        let dag = layout(&def);
        let col = |n: &str| {
            let node = dag.nodes.iter().find(|x| x.name == n).unwrap();
            (node.x - MARGIN) / COLUMN
        };
        assert_eq!(
            [col("extract"), col("clean"), col("load"), col("report")],
            [0, 1, 2, 3]
        );
        assert_eq!(dag.edges.len(), 4);
        let e = dag
            .edges
            .iter()
            .find(|e| e.from == "extract" && e.to == "report")
            .unwrap();
        // From extract's right middle to report's left middle.
        assert!(e.path.starts_with("M192,38 "), "{}", e.path);
        assert!(e.path.ends_with(" 712,38"), "{}", e.path);
        // Bowed under clean and load (their boxes end at y 60), not drawn through them.
        assert!(e.path.contains("C250,82 654,82 "), "{}", e.path);
        let next = dag.edges.iter().find(|e| e.to == "clean").unwrap();
        assert_eq!(next.path, "M192,38 C220,38 220,38 248,38");
        assert_eq!(dag.width, 2 * MARGIN + 3 * COLUMN + WIDTH);
        assert_eq!(dag.height, 2 * MARGIN + HEIGHT + HEIGHT / 2);
    }

    #[test]
    fn siblings_stack_down_their_column() {
        let def = WorkflowDefinition {
            tasks: vec![task("a", &[]), task("b", &[]), task("c", &["a", "b"])],
        };
        let dag = layout(&def);
        let ys: Vec<_> = dag.nodes.iter().map(|n| (n.name.as_str(), n.y)).collect();
        assert!(ys.contains(&("a", MARGIN)) && ys.contains(&("b", MARGIN + ROW)));
        assert_eq!(dag.height, 2 * MARGIN + ROW + HEIGHT);
        assert_eq!(
            dag.nodes.iter().find(|n| n.name == "c").unwrap().kind,
            "shell"
        );
    }
}
