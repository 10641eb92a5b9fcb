//! What a benchmark run found: table rows (figure, case, product and floor summaries, target,
//! met or not), facts that are not samples (binary sizes, settings), notes, and raw details; and
//! how they are printed (markdown) and saved (JSON).
//!
//! A row is judged on medians only, and a row with no target is never marked met.
use serde_json::{json, Map, Value};

use crate::stats::Samples;

/// One line of the results table.
pub(crate) struct Row {
    pub(crate) figure: String,
    pub(crate) case: String,
    pub(crate) unit: &'static str,
    pub(crate) product: Samples,
    pub(crate) floor: Option<Samples>,
    pub(crate) target: String,
    pub(crate) met: Option<bool>,
}

impl Row {
    pub(crate) fn new(figure: &str, case: &str, unit: &'static str, product: Samples) -> Row {
        Row {
            figure: figure.into(),
            case: case.into(),
            unit,
            product,
            floor: None,
            target: "—".into(),
            met: None,
        }
    }

    pub(crate) fn floor(mut self, floor: Samples) -> Row {
        self.floor = Some(floor);
        self
    }

    /// A target and whether the medians meet it.
    pub(crate) fn target(mut self, text: &str, met: bool) -> Row {
        self.target = text.into();
        self.met = Some(met);
        self
    }

    fn to_json(&self) -> Value {
        json!({
            "figure": self.figure,
            "case": self.case,
            "unit": self.unit,
            "product": self.product.to_json(),
            "floor": self.floor.as_ref().map(Samples::to_json),
            "target": self.target,
            "met": self.met,
        })
    }
}

/// Everything one run of the benchmark found, for every flavour.
#[derive(Default)]
pub(crate) struct Report {
    pub(crate) rows: Vec<(String, Row)>,
    pub(crate) facts: Vec<(String, String)>,
    pub(crate) notes: Vec<String>,
    pub(crate) details: Map<String, Value>,
}

impl Report {
    pub(crate) fn row(&mut self, flavour: &str, row: Row) {
        eprintln!(
            "  {} [{}]: {} {}{}",
            row.figure,
            row.case,
            row.product.brief(),
            row.unit,
            row.floor
                .as_ref()
                .map_or(String::new(), |f| format!(", floor {}", f.brief()))
        );
        self.rows.push((flavour.to_string(), row));
    }

    pub(crate) fn fact(&mut self, name: &str, value: impl Into<String>) {
        self.facts.push((name.into(), value.into()));
    }

    pub(crate) fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        eprintln!("  note: {text}");
        self.notes.push(text);
    }

    pub(crate) fn detail(&mut self, key: &str, value: Value) {
        self.details.insert(key.into(), value);
    }

    /// The results as a markdown table plus facts and notes.
    pub(crate) fn markdown(&self) -> String {
        let mut out = String::from(
            "| server | figure | case | mysql-snapshot median (min–p90) | floor median (min–p90) | target | met |\n|---|---|---|---|---|---|---|\n",
        );
        for (flavour, row) in &self.rows {
            let floor = row
                .floor
                .as_ref()
                .map_or("—".to_string(), |f| format!("{} {}", f.brief(), row.unit));
            let met = match row.met {
                Some(true) => "met",
                Some(false) => "**not met**",
                None => "—",
            };
            out.push_str(&format!(
                "| {flavour} | {} | {} | {} {} | {floor} | {} | {met} |\n",
                row.figure,
                row.case,
                row.product.brief(),
                row.unit,
                row.target
            ));
        }
        if !self.facts.is_empty() {
            out.push_str("\n| fact | value |\n|---|---|\n");
            for (name, value) in &self.facts {
                out.push_str(&format!("| {name} | {value} |\n"));
            }
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                out.push_str(&format!("- {note}\n"));
            }
        }
        out
    }

    pub(crate) fn to_json(&self, header: Value) -> Value {
        json!({
            "run": header,
            "rows": self.rows.iter().map(|(flavour, row)| {
                let mut value = row.to_json();
                value["server"] = json!(flavour);
                value
            }).collect::<Vec<_>>(),
            "facts": self.facts.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
            "notes": self.notes,
            "details": self.details,
        })
    }
}
