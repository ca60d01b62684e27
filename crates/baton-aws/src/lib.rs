//! Baton's adapters: the chain's ports on AWS and HTTP.
//!
//! - [`dynamo`]: the store on DynamoDB (state and memory tables; [`dynamo::keys`] is the
//!   layout);
//! - [`sqs`]: the queues; [`s3`]: payloads past the inline limit;
//! - [`invoker`]: each kind of agent (HTTP, Lambda, OpenAI-compatible, Bedrock), behind the
//!   endpoint guard, with [`signed`] requests to AWS APIs and [`vault`] for tenants' secrets;
//! - [`prober`]: agents' health checks;
//! - [`batch`]: the SQS batch helper every queue-driven function uses;
//! - [`transport`]: the one HTTP stack of outbound calls, the SDK's too;
//! - [`telemetry`] (start-up wiring, logs, API call counting) and [`emf`] (the metrics
//!   recorder).

pub mod batch;
pub mod counter;
pub mod dynamo;
pub mod emf;
pub mod invoker;
pub mod prober;
pub mod s3;
pub mod signed;
pub mod sqs;
pub mod streaming;
pub mod telemetry;
pub mod transport;
pub mod vault;
