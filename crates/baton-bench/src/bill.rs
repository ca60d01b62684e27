//! What Baton's work would cost on AWS: the list prices in one place, and the bill of what the
//! local stack counted between two points, per unit of work (a task, a turn).
//!
//! Counted, not estimated, where the stack can count:
//! - DynamoDB write units as the emulator meters them (`infra/emulator.py`, `meter_writes`):
//!   by item size, transactions twice, and every global secondary index's own writes;
//! - DynamoDB read units, estimated by the SDK interceptor (a unit per strongly consistent item
//!   read, half per eventually consistent one, whatever its size);
//! - SQS requests as the handlers and the event-source stand-ins make them: sends, receives that
//!   returned messages, deletes (the mappings' empty long polls are the idle cost's);
//! - each function's invocations and durations as the stack ran them (release build), billed
//!   at the template's memory size;
//! - API Gateway requests: the API's invocations of orchestrate.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use baton_local::invocations::Invoked;
use baton_local::stack::LocalStack;
use serde_json::Value;

/// List prices, us-east-1, in USD per million requests or units unless said otherwise
/// (DynamoDB on-demand, SQS standard queues, S3 Standard, HTTP APIs' first 300 million).
pub mod prices {
    pub const DYNAMODB_WRITE_UNIT: f64 = 0.625;
    pub const DYNAMODB_READ_UNIT: f64 = 0.125;
    pub const SQS_REQUEST: f64 = 0.40;
    pub const S3_PUT_REQUEST: f64 = 5.0;
    pub const S3_GET_REQUEST: f64 = 0.40;
    pub const LAMBDA_REQUEST: f64 = 0.20;
    /// Per GB-second, arm64 (the template's default `Architecture`; x86_64 is $0.0000166667).
    pub const LAMBDA_GB_SECOND: f64 = 0.000_013_333_4;
    pub const HTTP_API_REQUEST: f64 = 1.00;
    /// The template's `MemorySize` for every function.
    pub const LAMBDA_MEMORY_GB: f64 = 128.0 / 1024.0;
}

/// What the stack had counted at one point.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub calls: BTreeMap<String, f64>,
    /// The emulator's meter: per table and index (`<table>/<index>`), write units and writes.
    pub metered: Metered,
    /// The same by item kind and operation (`<table> <kind> <operation>`, e.g.
    /// `baton-state TASK update`): where the units go.
    pub metered_kinds: Metered,
    pub invocations: BTreeMap<&'static str, Invoked>,
}

impl Usage {
    /// The stack's counts now, once the emulator's meter has settled.
    pub async fn now(stack: &LocalStack, meter: &Path) -> Result<Self, String> {
        let totals = settled_meter(meter).await?;
        Ok(Usage {
            calls: stack.api_calls.snapshot(),
            metered: metered(&totals["tables"]),
            metered_kinds: metered(&totals["kinds"]),
            invocations: stack.invocations.snapshot(),
        })
    }

    /// What was counted after `earlier`.
    pub fn since(&self, earlier: &Usage) -> Usage {
        let calls = self
            .calls
            .iter()
            .map(|(k, v)| (k.clone(), v - earlier.calls.get(k).copied().unwrap_or(0.0)))
            .collect();
        let invocations = self
            .invocations
            .iter()
            .map(|(k, v)| {
                let before = earlier.invocations.get(k).copied().unwrap_or_default();
                let invoked = Invoked {
                    count: v.count - before.count,
                    billed_ms: v.billed_ms - before.billed_ms,
                };
                (*k, invoked)
            })
            .collect();
        Usage {
            calls,
            metered: metered_since(&self.metered, &earlier.metered),
            metered_kinds: metered_since(&self.metered_kinds, &earlier.metered_kinds),
            invocations,
        }
    }

    fn call(&self, name: &str) -> f64 {
        self.calls.get(name).copied().unwrap_or(0.0)
    }
}

/// Write units and writes, by name.
pub type Metered = BTreeMap<String, (f64, f64)>;

/// One of the meter file's maps: `{name: {"write_units": n, "writes": n}}`.
fn metered(totals: &Value) -> Metered {
    let field = |t: &Value, f: &str| t[f].as_f64().unwrap_or(0.0);
    totals
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, t)| (name.clone(), (field(t, "write_units"), field(t, "writes"))))
        .collect()
}

/// What `now` metered after `earlier`.
fn metered_since(now: &Metered, earlier: &Metered) -> Metered {
    now.iter()
        .map(|(k, (units, writes))| {
            let (u, w) = earlier.get(k).copied().unwrap_or_default();
            (k.clone(), (units - u, writes - w))
        })
        .collect()
}

/// The emulator's metered totals, once they have settled: two reads of the meter's file, more
/// than two of its 200 ms rewrites apart, that agree.
pub async fn settled_meter(path: &Path) -> Result<Value, String> {
    let read = || -> Option<Value> { serde_json::from_slice(&std::fs::read(path).ok()?).ok() };
    let mut last = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(450)).await;
        let now = read();
        if now.is_some() && now == last {
            return Ok(now.unwrap_or_default());
        }
        last = now;
    }
    Err(format!(
        "the emulator's meter at {} did not settle",
        path.display()
    ))
}

/// Milliseconds billed per invocation, by function.
pub type Durations = BTreeMap<&'static str, f64>;

/// Each function's mean billed milliseconds per invocation in `usage`.
pub fn durations(usage: &Usage) -> Durations {
    usage
        .invocations
        .iter()
        .filter(|(_, i)| i.count > 0)
        .map(|(function, i)| (*function, i.billed_ms as f64 / i.count as f64))
        .collect()
}

/// One unit of work's bill: the figures per unit and their dollars per million units.
#[derive(Debug, Clone, Default)]
pub struct Bill {
    pub item_write_units: f64,
    pub index_write_units: f64,
    pub read_units: f64,
    pub sqs_requests: f64,
    pub lambda_invocations: f64,
    pub gb_seconds: f64,
    pub api_requests: f64,
    pub s3_puts: f64,
    pub s3_gets: f64,
}

impl Bill {
    /// `usage` spread over `units` units of work.
    pub fn of(usage: &Usage, units: f64) -> Self {
        Self::with_durations(usage, units, &Durations::new())
    }

    /// As [`Bill::of`], with each function in `durations` billed at that many milliseconds
    /// per invocation instead of what `usage` measured (durations measured without a backlog,
    /// when `usage`'s ran under one).
    pub fn with_durations(usage: &Usage, units: f64, durations: &Durations) -> Self {
        let per = |n: f64| n / units;
        let (mut items, mut indexes) = (0.0, 0.0);
        for (name, (written, _)) in &usage.metered {
            match name.contains('/') {
                true => indexes += written,
                false => items += written,
            }
        }
        let sqs: f64 = usage
            .calls
            .iter()
            .filter(|(k, _)| k.starts_with("sqs.") && k.split('.').count() == 2)
            .map(|(_, v)| v)
            .sum::<f64>()
            - usage.call("sqs.ReceiveMessage.empty");
        let invocations: u64 = usage.invocations.values().map(|i| i.count).sum();
        let billed_ms: f64 = usage
            .invocations
            .iter()
            .map(|(function, i)| match durations.get(function) {
                Some(ms) => i.count as f64 * ms,
                None => i.billed_ms as f64,
            })
            .sum();
        Bill {
            item_write_units: per(items),
            index_write_units: per(indexes),
            read_units: per(usage.call("dynamodb.read_units")),
            sqs_requests: per(sqs),
            lambda_invocations: per(invocations as f64),
            gb_seconds: per(billed_ms / 1000.0 * prices::LAMBDA_MEMORY_GB),
            api_requests: per(usage
                .invocations
                .get("orchestrate")
                .map_or(0.0, |i| i.count as f64)),
            s3_puts: per(usage.call("s3.PutObject") + usage.call("s3.CopyObject")),
            s3_gets: per(usage.call("s3.GetObject")),
        }
    }

    pub fn write_units(&self) -> f64 {
        self.item_write_units + self.index_write_units
    }

    /// Dollars per million units of work, by service.
    pub fn dollars(&self) -> Dollars {
        use prices::*;
        Dollars {
            dynamodb: self.write_units() * DYNAMODB_WRITE_UNIT
                + self.read_units * DYNAMODB_READ_UNIT,
            sqs: self.sqs_requests * SQS_REQUEST,
            lambda: self.lambda_invocations * LAMBDA_REQUEST
                + self.gb_seconds * 1e6 * LAMBDA_GB_SECOND,
            api_gateway: self.api_requests * HTTP_API_REQUEST,
            s3: self.s3_puts * S3_PUT_REQUEST + self.s3_gets * S3_GET_REQUEST,
        }
    }
}

/// Dollars per million units of work.
#[derive(Debug, Clone, Copy, Default)]
pub struct Dollars {
    pub dynamodb: f64,
    pub sqs: f64,
    pub lambda: f64,
    pub api_gateway: f64,
    pub s3: f64,
}

impl Dollars {
    pub fn total(&self) -> f64 {
        self.dynamodb + self.sqs + self.lambda + self.api_gateway + self.s3
    }
}

/// Prints a meter's lines per `unit`, the ones with writes.
fn print_metered(title: &str, metered: &Metered, units: f64, unit: &str) {
    println!("{title}, per {unit}:");
    for (name, (written, writes)) in metered {
        if *writes > 0.0 {
            println!(
                "  {name:<38} {:>7.2} units, {:>6.2} writes",
                written / units,
                writes / units
            );
        }
    }
}

/// Prints `usage` per `unit` (of which there were `units`): every call, the meter by table and
/// index, each function's invocations, and the bill in dollars, Lambda's at `durations` where
/// they name the function. Returns the bill.
pub fn print_bill(usage: &Usage, units: f64, unit: &str, durations: &Durations) -> Bill {
    println!(
        "{:<40} {:>10} {:>10}",
        "AWS calls",
        "total",
        format!("per {unit}")
    );
    for (kind, n) in &usage.calls {
        if *n != 0.0 {
            println!("{kind:<40} {n:>10} {:>10.2}", n / units);
        }
    }
    print_metered("Metered DynamoDB writes", &usage.metered, units, unit);
    print_metered(
        "The same by item kind and operation",
        &usage.metered_kinds,
        units,
        unit,
    );
    println!("Lambda, per {unit}:");
    for (function, invoked) in &usage.invocations {
        if invoked.count > 0 {
            println!(
                "  {function:<38} {:>7.3} invocations, {:>7.1} ms billed each",
                invoked.count as f64 / units,
                invoked.billed_ms as f64 / invoked.count as f64
            );
        }
    }
    let bill = Bill::with_durations(usage, units, durations);
    let dollars = bill.dollars();
    println!(
        "Per {unit}: {:.2} write units ({:.2} items + {:.2} indexes), {:.2} read units, \
         {:.2} SQS requests, {:.2} Lambda invocations ({:.6} GB-s), {:.2} API requests",
        bill.write_units(),
        bill.item_write_units,
        bill.index_write_units,
        bill.read_units,
        bill.sqs_requests,
        bill.lambda_invocations,
        bill.gb_seconds,
        bill.api_requests,
    );
    println!(
        "$ per 1M {unit}s: DynamoDB {:.2} + SQS {:.2} + Lambda {:.2} + API Gateway {:.2} + S3 {:.2} = {:.2}",
        dollars.dynamodb,
        dollars.sqs,
        dollars.lambda,
        dollars.api_gateway,
        dollars.s3,
        dollars.total()
    );
    bill
}
