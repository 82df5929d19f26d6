"""The whole simulated cloud: IMDS + AWS, seeded with one instance of an Auto Scaling group
(or several: :meth:`World.seed` ``size``, each with its own IMDS, :meth:`World.imds_for`).

Used by ``agent demo``, the tests and the benchmarks. A client process gets the world
through :meth:`World.env` (endpoints only: its credentials come from the IMDS role through
the SDK's default chain, as on a real instance) and :meth:`World.agent_config`. As a group
does, the world replaces an instance marked Unhealthy: its termination begins (the
termination hooks pending, IMDS's target lifecycle state ``Terminated``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

import boto3

from agent.sim.autoscaling import LAUNCHING
from agent.sim.cloud import SimCloud
from agent.sim.imds import ImdsSimulator, SimInstance
from agent.sim.serving import Served

IMAGE_ID = "ami-0c0ffee0123456789"
SAMPLE_SECRETS: dict[str, str | bytes] = {  # made-up values: JSON, plain text, binary
    "demo/db": json.dumps({"username": "app", "password": "correct horse battery staple",
                           "host": "db.internal", "port": 5432}),
    "demo/api-token": "tok_live_0123456789abcdef",
    "demo/tls-key": bytes(range(256)),
}
"""What ``agent demo`` seeds, and ``python -m agent.sim serve`` without ``--seed``."""


class World(Served):
    """An :class:`ImdsSimulator` and a :class:`SimCloud`, started and stopped together."""

    def __init__(
        self,
        imds_host: str = "127.0.0.1",
        imds_port: int = 0,
        aws_host: str = "127.0.0.1",
        aws_port: int = 0,
        aws_latency: float = 0.0,
    ) -> None:
        self.imds = ImdsSimulator(imds_host, imds_port)
        self.imds_host = imds_host
        self.cloud = SimCloud(aws_host, aws_port, aws_latency)
        self.region = "us-east-1"
        self.group: str | None = None
        self.hook: str | None = None
        self.instance_id: str | None = None
        self.instances: dict[str, dict[str, str]] = {}  # id -> IMDS tags
        self.tags_enabled = True
        self.instance_ids: list[str] = []
        self.fleet: dict[str, ImdsSimulator] = {}  # instance id -> its IMDS (see imds_for)
        self.replace_unhealthy = True  # SetInstanceHealth Unhealthy starts the termination
        self._session: Any = None
        self.cloud.health.on_unhealthy.append(self._replace)

    def start(self) -> World:
        """Start both servers; ``/_sim/imds`` controls the IMDS from another process,
        ``/_sim/launch`` launches the seeded instance again."""
        self.imds.start()
        self.cloud.start()
        self.cloud.add_control("imds", self._imds_control)
        self.cloud.add_control("launch", self._launch_control)
        return self

    def stop(self) -> None:
        """Stop the servers (the fleet's IMDS simulators all at once)."""
        self.cloud.stop()
        others = [sim for sim in self.fleet.values() if sim is not self.imds]
        if others:
            from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

            with ThreadPoolExecutor(32) as pool:
                list(pool.map(lambda sim: sim.stop(), others))
        self.imds.stop()

    def boto3_client(self, service: str, region: str | None = None,
                     account: str | None = None) -> Any:
        """A boto3 client for the simulated cloud, with the harness's static test keys.

        ``account``: signed as a role of that account (moto keeps each account apart).
        """
        if self._session is None:
            self._session = boto3.session.Session(
                aws_access_key_id="testing",
                aws_secret_access_key="testing",  # noqa: S106
            )
        keys: dict[str, str] = {}
        if account is not None:
            sts = self._session.client("sts", region_name=self.region,
                                       endpoint_url=self.cloud.endpoint_url)
            reply = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/world-admin",
                                    RoleSessionName="world")["Credentials"]
            keys = {"aws_access_key_id": reply["AccessKeyId"],
                    "aws_secret_access_key": reply["SecretAccessKey"],
                    "aws_session_token": reply["SessionToken"]}
        return self._session.client(
            service, region_name=region or self.region, endpoint_url=self.cloud.endpoint_url,
            **keys
        )

    def seed(
        self,
        *,
        group: str = "web-asg",
        instance_type: str = "m5.xlarge",
        region: str = "us-east-1",
        hook: str | None = "agent-ready",
        heartbeat_timeout: int = 300,
        default_result: str = "ABANDON",
        in_group: bool = True,
        tags_enabled: bool = True,
        warm_pool: str | None = None,
        secrets: Mapping[str, str | bytes] | None = None,
        ssm_parameters: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        size: int = 1,
    ) -> str:
        """Create the group, its launch hook, secrets and parameters; launch; the instance id.

        ``warm_pool`` (e.g. ``Warmed:Stopped``) launches the instance into the warm pool.
        ``tags``: the instances' tags besides Name and the group's. ``size``: that many
        instances in the group, all launching (:attr:`instance_ids`; the first is
        :attr:`instance_id`, served by :attr:`imds`, the others by :meth:`imds_for`).
        """
        self.region = region
        zone = f"{region}a"
        ec2 = self.boto3_client("ec2")
        extra_tags = dict(tags or {})
        tags = {"Name": group, **extra_tags}
        if in_group:
            autoscaling = self.boto3_client("autoscaling")
            ec2.create_launch_template(
                LaunchTemplateName=f"{group}-lt",
                LaunchTemplateData={"ImageId": IMAGE_ID, "InstanceType": instance_type},
            )
            autoscaling.create_auto_scaling_group(
                AutoScalingGroupName=group,
                LaunchTemplate={"LaunchTemplateName": f"{group}-lt", "Version": "$Latest"},
                MinSize=size,
                MaxSize=size,
                DesiredCapacity=size,
                AvailabilityZones=[zone],
            )
            if hook is not None:
                autoscaling.put_lifecycle_hook(
                    LifecycleHookName=hook,
                    AutoScalingGroupName=group,
                    LifecycleTransition=LAUNCHING,
                    HeartbeatTimeout=heartbeat_timeout,
                    DefaultResult=default_result,
                )
            (described,) = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])[
                "AutoScalingGroups"
            ]
            instance_ids = [str(i["InstanceId"]) for i in described["Instances"]]
            tags["aws:autoscaling:groupName"] = group
        else:
            (launched,) = ec2.run_instances(
                ImageId=IMAGE_ID,
                InstanceType=instance_type,
                MinCount=1,
                MaxCount=1,
                Placement={"AvailabilityZone": zone},
            )["Instances"]
            instance_ids = [str(launched["InstanceId"])]
        if extra_tags:  # in EC2 too, for DescribeTags
            ec2.create_tags(Resources=instance_ids,
                            Tags=[{"Key": k, "Value": v} for k, v in extra_tags.items()])
        addresses = {
            str(i["InstanceId"]): str(i["PrivateIpAddress"])
            for r in ec2.describe_instances(InstanceIds=instance_ids)["Reservations"]
            for i in r["Instances"]
        }
        facts: dict[str, Any] = {
            "instance_type": instance_type, "region": region, "availability_zone": zone,
            "image_id": IMAGE_ID, "tags": tags if tags_enabled else None,
            "target_lifecycle_state": (warm_pool or "InService") if in_group else None}
        self.imds.instance.update(instance_id=instance_ids[0],
                                  private_ip=addresses[instance_ids[0]], **facts)
        self.fleet = {instance_ids[0]: self.imds}
        for other in instance_ids[1:]:
            instance = SimInstance(instance_id=other, private_ip=addresses[other], **facts)
            self.fleet[other] = ImdsSimulator(self.imds_host, 0, instance,
                                              poll_interval=0.5).start()
        self._create_secrets(secrets or {}, ssm_parameters or {})
        self.group = group if in_group else None
        self.hook = hook if in_group else None
        self.instance_id = instance_ids[0]
        self.instance_ids = instance_ids
        self.tags_enabled = tags_enabled
        self.instances = {instance_id: dict(tags) for instance_id in instance_ids}
        if in_group:
            for instance_id in instance_ids:
                self.cloud.launch(group, instance_id, warm_pool)
        return self.instance_id

    def imds_for(self, instance_id: str) -> ImdsSimulator:
        """The IMDS simulator that serves ``instance_id`` (:attr:`imds` for the first)."""
        return self.fleet[instance_id]

    def _replace(self, group: str, instance_id: str) -> None:
        """An instance marked Unhealthy: the group terminates it (and launches another)."""
        if not self.replace_unhealthy:
            return
        self.cloud.terminate(group, instance_id)
        sim = self.fleet.get(instance_id)
        if sim is not None:
            sim.instance.update(target_lifecycle_state="Terminated")

    def add_instance(self, tags: Mapping[str, str] | None = None) -> str:
        """Scale the group out by one instance (with these tags besides the group's): its id.

        Its launch action is pending; IMDS goes on serving the current instance until
        :meth:`become` switches to this one.
        """
        assert self.group is not None, "seed an instance in a group first"
        autoscaling, ec2 = self.boto3_client("autoscaling"), self.boto3_client("ec2")

        (group,) = autoscaling.describe_auto_scaling_groups(
            AutoScalingGroupNames=[self.group])["AutoScalingGroups"]
        zone = str(group["AvailabilityZones"][0])
        # launched, then attached: moto's scale-out (a larger DesiredCapacity) launches too many
        (launched,) = ec2.run_instances(
            ImageId=IMAGE_ID, InstanceType=self.imds.instance.instance_type,
            MinCount=1, MaxCount=1, Placement={"AvailabilityZone": zone})["Instances"]
        instance_id = str(launched["InstanceId"])
        autoscaling.update_auto_scaling_group(AutoScalingGroupName=self.group,
                                              MaxSize=len(group["Instances"]) + 1)
        autoscaling.attach_instances(InstanceIds=[instance_id], AutoScalingGroupName=self.group)
        extra = dict(tags or {})
        if extra:
            ec2.create_tags(Resources=[instance_id],
                            Tags=[{"Key": k, "Value": v} for k, v in extra.items()])
        self.instances[instance_id] = {"Name": self.group, **extra,
                                       "aws:autoscaling:groupName": self.group}
        self.instance_ids.append(instance_id)
        self.cloud.launch(self.group, instance_id)
        return instance_id

    def become(self, instance_id: str) -> None:
        """IMDS serves ``instance_id``: its identity, private address and tags."""
        (reservation,) = self.boto3_client("ec2").describe_instances(
            InstanceIds=[instance_id])["Reservations"]
        self.imds.instance.update(
            instance_id=instance_id,
            private_ip=reservation["Instances"][0]["PrivateIpAddress"],
            tags=self.instances[instance_id] if self.tags_enabled else None)
        self.imds.expire_tokens()
        self.instance_id = instance_id
        self.fleet = {i: sim for i, sim in self.fleet.items() if sim is not self.imds}
        self.fleet[instance_id] = self.imds

    def _create_secrets(
        self, secrets: Mapping[str, str | bytes], ssm_parameters: Mapping[str, str]
    ) -> None:
        if secrets:
            secretsmanager = self.boto3_client("secretsmanager")
            for name, value in secrets.items():
                if isinstance(value, bytes):
                    secretsmanager.create_secret(Name=name, SecretBinary=value)
                else:
                    secretsmanager.create_secret(Name=name, SecretString=value)
        if ssm_parameters:
            ssm = self.boto3_client("ssm")
            for name, text in ssm_parameters.items():
                ssm.put_parameter(Name=name, Value=text, Type="SecureString")

    def env(self, instance_id: str | None = None) -> dict[str, str]:
        """Environment for a client process (on ``instance_id``, default the first):
        endpoints and region, no static keys.

        Start from an environment without ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/
        ``AWS_SESSION_TOKEN``/``AWS_PROFILE``; the shared config files are pointed at
        /dev/null so that the IMDS role is what the default credential chain finds.
        """
        return {
            "AWS_ENDPOINT_URL": self.cloud.endpoint_url,
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": self._imds_of(instance_id).endpoint,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    def agent_config(
        self,
        secrets_dir: str | os.PathLike[str],
        state_dir: str | os.PathLike[str],
        secret_files: Iterable[Mapping[str, Any]] = (),
        instance_id: str | None = None,
    ) -> str:
        """An agent TOML config for this world (on ``instance_id``, default the first);
        ``secret_files`` are ``[[secrets.files]]``."""
        lines = [
            f"state_dir = {_toml(os.fspath(state_dir))}",
            "",
            "[imds]",
            f"endpoint = {_toml(self._imds_of(instance_id).endpoint)}",
            "",
            "[aws]",
            f"endpoint_url = {_toml(self.cloud.endpoint_url)}",
            "",
            "[secrets]",
            f"dir = {_toml(os.fspath(secrets_dir))}",
            "",
            "[tuning]",  # the previous boot's instance type: kept beside this world's state
            f"history_file = {_toml(os.path.join(os.fspath(state_dir), 'history.json'))}",
        ]
        for entry in secret_files:
            lines += ["", "[[secrets.files]]"]
            lines += [f"{key} = {_toml(value)}" for key, value in entry.items()]
        lines += ["", "[lifecycle]", f"hook_name = {_toml(self.hook or '')}", ""]
        return "\n".join(lines)

    def _imds_of(self, instance_id: str | None) -> ImdsSimulator:
        return self.imds if instance_id is None else self.fleet[instance_id]

    def _imds_control(self, body: dict[str, Any] | None) -> dict[str, Any]:
        """``/_sim/imds``: POST instance facts and fault knobs; GET the request log."""
        imds = self.imds
        if body:
            body = dict(body)
            if "fail_next" in body:
                imds.fail_next(**body.pop("fail_next"))
            for knob in ("latency", "token_lifetime", "disabled", "hop_limit_exceeded"):
                if knob in body:
                    setattr(imds, knob, body.pop(knob))
            if body.pop("expire_tokens", False):
                imds.expire_tokens()
            if isinstance(body.get("user_data"), str):
                body["user_data"] = body["user_data"].encode()
            imds.instance.update(**body)
        return {"requests": [list(r) for r in imds.requests]}


    def relaunch(self) -> None:
        """The seeded instance launches again: a new pending action on each launch hook."""
        if self.group is None or self.instance_id is None:
            raise ValueError("no instance of an Auto Scaling group is seeded")
        self.imds.instance.update(target_lifecycle_state="InService")
        self.cloud.launch(self.group, self.instance_id)

    def _launch_control(self, body: dict[str, Any] | None) -> dict[str, Any]:
        """``/_sim/launch``: POST launches the instance again; GET only answers the state."""
        if body is not None:
            self.relaunch()
        return self.cloud.state()


def _toml(value: Any) -> str:
    """A TOML scalar (JSON string escapes are valid TOML basic-string escapes)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)
