# Example: bake the instance boot agent into an AMI (Debian 12; for Debian 13 take its own
# package and AMI; adapt the source for AL2023 with the .rpm and dnf). The image carries no
# credential and no secret: the agent fetches them at each boot.
#
#   make deb DIST=bookworm
#   packer build -var deb=dist/bookworm/instance-boot-agent_0.1.0+deb12_amd64.deb \
#     packaging/packer/agent.pkr.hcl
#
# Written for the amazon-ebs builder that Debian's packer (1.6) has built in, so that
# `packer validate` works with it; with Packer >= 1.7 first run
# `packer plugins install github.com/hashicorp/amazon`, and add the IMDSv2 settings below.
#
# Every bake takes the latest updates (security included), so rebuilding an image is how a
# fleet gets patched. `agent bake-check --fix` runs last: it empties the machine-id and
# removes SSH host keys, authorized_keys, histories, the journal and logs (saying what it
# did), then fails the bake when security updates are pending, when the image would carry
# credentials, an invalid config or the unit disabled, or when anything would still make
# every instance a clone; else it writes /etc/agent/image.json.

variable "deb" {
  type        = string
  description = "Path of the built package of the image's release, dist/<release>/instance-boot-agent_<version>+deb<n>_<arch>.deb."
}

variable "region" {
  type    = string
  default = "us-east-1"
}

variable "instance_type" {
  type    = string
  default = "t3.small"
}

variable "ami_name_prefix" {
  type    = string
  default = "app-base-debian12"
}

locals {
  stamp = formatdate("YYYYMMDD-hhmmss", timestamp())
}

source "amazon-ebs" "debian12" {
  region        = var.region
  instance_type = var.instance_type
  ssh_username  = "admin"
  ami_name      = "${var.ami_name_prefix}-${local.stamp}"
  encrypt_boot  = true

  source_ami_filter {
    filters = {
      name                = "debian-12-amd64-*"
      architecture        = "x86_64"
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
    owners      = ["136693071363"] # Debian
    most_recent = true
  }

  # IMDSv2 only, for the build instance too, and as the AMI's default (the agent never
  # falls back to IMDSv1). The Amazon plugin >= 1.0 knows these; Packer 1.6 does not:
  #   metadata_options {
  #     http_endpoint               = "enabled"
  #     http_tokens                 = "required"
  #     http_put_response_hop_limit = 1
  #   }
  #   imds_support = "v2.0"

  tags = {
    Name    = "${var.ami_name_prefix}-${local.stamp}"
    BuiltBy = "packer"
    BaseAMI = "{{ .SourceAMI }}"
  }
}

build {
  sources = ["source.amazon-ebs.debian12"]

  provisioner "file" {
    source      = var.deb
    destination = "/tmp/instance-boot-agent.deb"
  }

  # The latest updates, security included, then the agent (its postinst enables the units
  # per preset; it does not start the agent: that happens at each boot of the image).
  provisioner "shell" {
    execute_command  = "sudo env {{ .Vars }} sh -eux '{{ .Path }}'"
    environment_vars = ["DEBIAN_FRONTEND=noninteractive"]
    inline = [
      "cloud-init status --wait >/dev/null || true",
      "apt-get update",
      "apt-get -y -o Dpkg::Options::=--force-confold dist-upgrade",
      "apt-get -y install /tmp/instance-boot-agent.deb",
      "rm -f /tmp/instance-boot-agent.deb",
    ]
  }

  # Clean instance state before the snapshot: nothing of this build instance may reach the
  # image (identity, keys, logs, caches); then the bake check has the last word. The package
  # lists stay: bake-check reads them to see whether a security update is still pending.
  provisioner "shell" {
    execute_command = "sudo env {{ .Vars }} sh -eux '{{ .Path }}'"
    inline = [
      "apt-get -y autoremove --purge",
      "apt-get clean",
      "rm -rf /tmp/* /var/tmp/*",
      "cloud-init clean --logs --seed",
      "rm -rf /root/.aws /home/*/.aws",
      "rm -rf /var/lib/agent", # the build instance's own boot history, if the agent ran
      "journalctl --flush && journalctl --rotate",
      "agent bake-check --fix", # machine-id, host keys, authorized_keys, histories, logs
      "sync",
    ]
  }
}
