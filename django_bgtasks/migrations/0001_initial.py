# The Task model has no table (managed=False): this migration only gives it a content
# type and its view/change/delete permissions.

from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Task",
            fields=[
                ("id", models.CharField(max_length=255, primary_key=True, serialize=False)),
                ("name", models.CharField(blank=True, max_length=255)),
            ],
            options={
                "verbose_name": "task",
                "verbose_name_plural": "tasks",
                "managed": False,
                "default_permissions": ("view", "change", "delete"),
            },
        ),
    ]
