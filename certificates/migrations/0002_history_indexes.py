"""Indexes for the admin lists of issuances, bundles and chain operations, newest first and by each filter:
these tables grow with history (docs/ROLLUPS.md, "Other tables that grow")."""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('certificates', '0001_initial'),
        ('minting', '0006_batch_rollup'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddIndex(
            model_name='certificatebundle',
            index=models.Index(fields=['status', 'issuance', 'range_start'], name='bundle_status_idx'),
        ),
        migrations.AddIndex(
            model_name='chainoperation',
            index=models.Index(fields=['created_at'], name='operation_created_idx'),
        ),
        migrations.AddIndex(
            model_name='chainoperation',
            index=models.Index(fields=['status', 'created_at'], name='operation_status_idx'),
        ),
        migrations.AddIndex(
            model_name='chainoperation',
            index=models.Index(fields=['kind', 'created_at'], name='operation_kind_idx'),
        ),
        migrations.AddIndex(
            model_name='issuance',
            index=models.Index(fields=['interval_start'], name='issuance_interval_idx'),
        ),
    ]
