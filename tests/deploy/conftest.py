"""Both templates deployed into the worker's moto: the data stack
(deploy/conveyor.yaml) and the compute stack (deploy/services.yaml) on a VPC
made for it, with what moto's CloudFormation skips applied from the same
templates (conveyor_cli.localstack.deploy)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import boto3
import pytest

from conveyor_cli.localstack import servers
from conveyor_cli.localstack.deploy import TEMPLATE, DeployedStack, deploy_stack

SERVICES_TEMPLATE = TEMPLATE.with_name("services.yaml")


@dataclass
class Deployment:
    data: DeployedStack
    compute: DeployedStack
    session: boto3.Session


def _network(session: boto3.Session) -> tuple[str, list[str]]:
    ec2 = session.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{i}.0/24", AvailabilityZone=zone)["Subnet"][
            "SubnetId"
        ]
        for i, zone in enumerate(("us-east-1a", "us-east-1b"))
    ]
    return vpc, subnets


@pytest.fixture(scope="module")
def deployment(moto: servers.Moto) -> Deployment:
    session = boto3.Session(region_name="us-east-1")
    name = f"cv{secrets.token_hex(4)}"
    data = deploy_stack(session, name, {"PickupBucketName": f"{name}-pickup"})
    vpc, subnets = _network(session)
    certificate = session.client("acm").request_certificate(DomainName="conveyor.example.com")
    compute = deploy_stack(
        session,
        f"{name}-services",
        {
            "DataStackName": name,
            "PickupBucketName": f"{name}-pickup",
            "RoutesBucketName": f"{name}-config",
            "MailIdentity": "example.com",
            "S3DestinationBuckets": f"{name}-pickup",
            "ArchiveBuckets": f"{name}-pickup",
            "LandingBuckets": f"{name}-pickup",
            "ImageRegistry": "123456789012.dkr.ecr.us-east-1.amazonaws.com",
            "ImageTag": "test",
            "VpcId": vpc,
            "ServiceSubnetIds": ",".join(subnets),
            "LoadBalancerSubnetIds": ",".join(subnets),
            "CertificateArn": certificate["CertificateArn"],
            "AlarmTopicArn": data.outputs["AlarmTopicArn"],
        },
        SERVICES_TEMPLATE,
    )
    return Deployment(data, compute, session)
