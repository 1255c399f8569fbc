//! The ECS worker provisioner against a real ECS endpoint: moto's, on loopback (or the
//! endpoint `WEIR_TEST_S3_ENDPOINT` names, which must serve ECS too).

use std::collections::BTreeSet;

use aws_sdk_ecs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ecs::types::ContainerDefinition;
use weir_control_plane::provisioner::{EcsService, Provisioner};
use weir_state_store::testing::{s3_endpoint, s3_options};

/// The secret the test's client signs with: the environment's for an endpoint of its own, else
/// one made up (moto takes any) that no error may show.
fn secret() -> String {
    std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "weir-ecs-provisioner-test-secret-51f0c2".into())
}

fn client() -> aws_sdk_ecs::Client {
    let options = s3_options();
    let config = aws_sdk_ecs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(s3_endpoint())
        .region(Region::new(options.region.unwrap_or_else(|| "us-east-1".into())))
        .credentials_provider(Credentials::new(options.access_key_id.unwrap_or_default(), secret(), None, None, "test"))
        .build();
    aws_sdk_ecs::Client::from_conf(config)
}

async fn desired_count(client: &aws_sdk_ecs::Client, cluster: &str, service: &str) -> i32 {
    let described = client.describe_services().cluster(cluster).services(service).send().await.expect("described");
    described.services()[0].desired_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ecs_provisioner_sets_the_worker_services_desired_count_and_names_what_is_missing() {
    let client = client();
    let cluster = format!("weir-test-{}", std::process::id());
    client.create_cluster().cluster_name(&cluster).send().await.expect("a cluster");
    let container =
        ContainerDefinition::builder().name("worker").image("weir:test").memory(512).command("worker").build();
    client
        .register_task_definition()
        .family("weir-worker")
        .container_definitions(container)
        .send()
        .await
        .expect("a task definition");
    client
        .create_service()
        .cluster(&cluster)
        .service_name("weir-workers")
        .task_definition("weir-worker")
        .desired_count(0)
        .send()
        .await
        .expect("a service");

    let workers = EcsService::new(client.clone(), &cluster, "weir-workers");
    assert_eq!(workers.name(), "ecs");
    let none = BTreeSet::new();
    workers.scale_to(3, &none).await.expect("scaled up");
    assert_eq!(desired_count(&client, &cluster, "weir-workers").await, 3);
    // Asked again within the reassert interval: no call, the last answer.
    client.update_service().cluster(&cluster).service("weir-workers").desired_count(5).send().await.unwrap();
    workers.scale_to(3, &none).await.expect("the same count");
    assert_eq!(desired_count(&client, &cluster, "weir-workers").await, 5, "not set again so soon");
    workers.scale_to(0, &none).await.expect("scaled to zero");
    assert_eq!(desired_count(&client, &cluster, "weir-workers").await, 0);

    let missing = EcsService::new(client.clone(), &cluster, "no-such-service");
    let error = missing.scale_to(1, &none).await.expect_err("no such service").to_string();
    assert!(error.contains("no-such-service") && error.contains("UpdateService"), "{error}");
    assert!(!error.contains(&secret()), "no secret in errors: {error}");
}
