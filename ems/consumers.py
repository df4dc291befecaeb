"""The `/ws/notifications/` websocket: a logged-in HR user joins their employer's group."""

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from ems.errors import PermissionDenied
from ems.notifications import employer_group
from ems.tenancy import caller_for_user


class NotificationConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        try:
            caller = await database_sync_to_async(caller_for_user)(user)
        except PermissionDenied:
            await self.close(code=4403)
            return
        if caller.employer_id is None:
            await self.close(code=4403)
            return
        self.group = employer_group(caller.employer_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code) -> None:
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def notification_message(self, message: dict) -> None:
        await self.send_json({"event": message["event"], "data": message["data"]})
