//! The fault proxy with real SDK clients in front and the emulator behind: each fault reaches
//! the SDK as it would on the network, and the SDK's own retries meet it.

use std::time::Duration;

use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use baton_local::emulator::sdk_config;
use baton_local::faults::{Fault, FaultPlan, FaultProxy, FaultReport, FaultRule, FaultRuleError};
use baton_tests::{emulator_endpoint, eventually};

async fn proxy() -> FaultProxy {
    FaultProxy::start(emulator_endpoint(), FaultPlan::default())
        .await
        .expect("proxy starts")
}

fn dynamodb(proxy: &FaultProxy, retries: RetryConfig) -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::config::Builder::from(&sdk_config(proxy.endpoint()))
        .retry_config(retries)
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

fn sqs(proxy: &FaultProxy) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&sdk_config(proxy.endpoint()))
}

/// A table of this test binary keyed by the string `pk`.
async fn table(client: &aws_sdk_dynamodb::Client, name: &str) -> String {
    let table = format!("faults-{}-{name}", std::process::id());
    client
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("attribute"),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .expect("key"),
        )
        .send()
        .await
        .expect("table created");
    table
}

async fn item_exists(client: &aws_sdk_dynamodb::Client, table: &str, pk: &str) -> bool {
    client
        .get_item()
        .table_name(table)
        .key("pk", AttributeValue::S(pk.into()))
        .consistent_read(true)
        .send()
        .await
        .expect("get item")
        .item
        .is_some()
}

#[tokio::test]
async fn a_lost_write_response_is_retried_by_the_sdk_and_meets_its_own_write() {
    let proxy = proxy().await;
    let client = dynamodb(&proxy, RetryConfig::standard());
    let table = table(&client, "lost").await;
    proxy
        .add_rule(FaultRule::once(
            "PutItem",
            &["order-1"],
            Fault::LoseResponse,
        ))
        .expect("a write can lose its response");

    let error = client
        .put_item()
        .table_name(&table)
        .item("pk", AttributeValue::S("order-1".into()))
        .condition_expression("attribute_not_exists(pk)")
        .send()
        .await
        .expect_err("the retry meets the first attempt's write");

    assert!(
        error
            .as_service_error()
            .is_some_and(|e| e.is_conditional_check_failed_exception()),
        "{error:?}"
    );
    assert!(item_exists(&client, &table, "order-1").await);
    let report = proxy.report();
    assert_eq!((report.lost_responses, report.rule_hits), (1, 1));
    assert_eq!(proxy.pending_rules(), 0);
}

#[tokio::test]
async fn throttled_requests_are_not_applied_and_the_sdk_retries_them() {
    let proxy = proxy().await;
    let client = dynamodb(&proxy, RetryConfig::standard());
    let table = table(&client, "throttled").await;
    let put = |pk: &str| {
        client
            .put_item()
            .table_name(&table)
            .item("pk", AttributeValue::S(pk.into()))
            .send()
    };

    proxy
        .add_rule(FaultRule::once("PutItem", &["item-a"], Fault::Throttle))
        .expect("a write can be throttled");
    put("item-a").await.expect("the retry succeeds");
    assert!(item_exists(&client, &table, "item-a").await);
    assert_eq!(proxy.report().throttled, 1);

    proxy
        .add_rule(FaultRule {
            times: 10,
            ..FaultRule::once("PutItem", &["item-b"], Fault::Throttle)
        })
        .expect("a write can be throttled");
    let error = put("item-b").await.expect_err("every attempt is throttled");

    assert!(
        error
            .as_service_error()
            .is_some_and(|e| e.is_provisioned_throughput_exceeded_exception()),
        "{error:?}"
    );
    assert!(!item_exists(&client, &table, "item-b").await);
    let attempts = proxy.report().throttled - 1;
    assert!(attempts > 1, "the SDK retried: {attempts} attempts");
    assert_eq!(proxy.pending_rules(), 1, "10 - {attempts} throttles remain");
}

#[tokio::test]
async fn a_duplicated_send_puts_the_message_on_the_queue_twice() {
    let proxy = proxy().await;
    let client = sqs(&proxy);
    let queue_url = client
        .create_queue()
        .queue_name(format!("faults-{}-duplicate", std::process::id()))
        .send()
        .await
        .expect("queue created")
        .queue_url
        .expect("queue url");
    proxy
        .add_rule(FaultRule::once(
            "SendMessage",
            &["dup-me"],
            Fault::Duplicate,
        ))
        .expect("a send can be duplicated");

    client
        .send_message()
        .queue_url(&queue_url)
        .message_body("dup-me")
        .send()
        .await
        .expect("sent");

    // Both copies are on the queue once the send returns; long polls collect them.
    let mut received = Vec::new();
    for _ in 0..20 {
        if received.len() >= 2 {
            break;
        }
        let out = client
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(60)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        received.extend(out.messages.unwrap_or_default());
    }
    let bodies: Vec<_> = received.iter().map(|m| m.body().unwrap_or("")).collect();
    assert_eq!(bodies, ["dup-me", "dup-me"]);
    assert_ne!(received[0].message_id, received[1].message_id);
    assert_eq!(proxy.report().duplicated_sends, 1);
}

#[tokio::test]
async fn during_an_outage_requests_fail_and_afterwards_they_succeed() {
    let proxy = proxy().await;
    let client = dynamodb(&proxy, RetryConfig::disabled());
    let table = table(&client, "outage").await;

    proxy.outage(Duration::from_millis(1500));
    let error = client
        .get_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("anything".into()))
        .send()
        .await
        .expect_err("the emulator is out of reach");
    assert!(matches!(error, SdkError::DispatchFailure(_)), "{error:?}");
    assert!(proxy.report().outage_drops >= 1);

    eventually("the outage ends", || async {
        let answer = client
            .put_item()
            .table_name(&table)
            .item("pk", AttributeValue::S("after".into()))
            .send()
            .await;
        answer.ok()
    })
    .await;
    assert!(item_exists(&client, &table, "after").await);
}

#[tokio::test]
async fn random_faults_follow_the_plan_rates_roughly() {
    let proxy = proxy().await;
    let client = dynamodb(&proxy, RetryConfig::disabled());
    let table = table(&client, "random").await;
    proxy.set_plan(FaultPlan {
        seed: 7,
        throttle_rate: 0.2,
        ..FaultPlan::default()
    });

    let mut failed = 0u64;
    for _ in 0..300 {
        let answer = client
            .update_item()
            .table_name(&table)
            .key("pk", AttributeValue::S("counter".into()))
            .update_expression("ADD hits :one")
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .send()
            .await;
        if let Err(error) = answer {
            assert!(
                error
                    .as_service_error()
                    .is_some_and(|e| e.is_provisioned_throughput_exceeded_exception()),
                "{error:?}"
            );
            failed += 1;
        }
    }
    proxy.set_plan(FaultPlan::default());

    let report = proxy.report();
    assert!((30..=90).contains(&report.throttled), "{report:?}");
    assert_eq!(report.throttled, failed);
    let item = client
        .get_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("counter".into()))
        .consistent_read(true)
        .send()
        .await
        .expect("get item")
        .item
        .expect("the counter exists");
    let hits = item.get("hits").and_then(|h| h.as_n().ok()).cloned();
    assert_eq!(
        hits,
        Some((300 - failed).to_string()),
        "throttled updates are not applied"
    );
}

#[tokio::test]
async fn a_rule_for_a_fault_its_operation_cannot_have_is_refused() {
    let proxy = proxy().await;
    assert!(matches!(
        proxy.add_rule(FaultRule::once("UpdateItem", &[], Fault::Duplicate)),
        Err(FaultRuleError::NotApplicable { .. })
    ));
    assert!(matches!(
        proxy.add_rule(FaultRule::once("GetItem", &[], Fault::LoseResponse)),
        Err(FaultRuleError::NotApplicable { .. })
    ));
    assert!(matches!(
        proxy.add_rule(FaultRule::once("SendMessage", &[], Fault::Throttle)),
        Err(FaultRuleError::NotApplicable { .. })
    ));
    assert!(matches!(
        proxy.add_rule(FaultRule {
            times: 0,
            ..FaultRule::once("PutItem", &[], Fault::Throttle)
        }),
        Err(FaultRuleError::NeverApplies(_))
    ));
    assert_eq!(proxy.pending_rules(), 0);
    assert_eq!(proxy.report(), FaultReport::default());
}
