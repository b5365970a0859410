//! The broker's delivery-task body (seed "RabbitMQ"): what the drone service consumes before it
//! sends a drone its `task`. Not a WebSocket envelope.

use crate::units::{Latitude, Longitude};
use crate::ws::{Destination, Priority, Task};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryTask {
    pub delivery_id: Uuid,
    pub order_id: Uuid,
    pub drone_id: Uuid,
    pub destination: BrokerDestination,
    pub priority: Priority,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrokerDestination {
    pub parcel_automat_id: Uuid,
    pub latitude: Latitude,
    pub longitude: Longitude,
    pub aruco_id: u32,
}

impl DeliveryTask {
    /// The `task` the drone service sends the drone for this broker message.
    pub fn to_task(&self) -> Task {
        Task {
            delivery_id: self.delivery_id,
            destination: Destination {
                lat: self.destination.latitude,
                lon: self.destination.longitude,
                aruco_id: self.destination.aruco_id,
            },
            priority: self.priority,
            volume: None,
        }
    }
}
